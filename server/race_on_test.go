//go:build race

package server

// raceEnabled: the race detector multiplies the cost of scanning large
// answers; the real-size runs that need minutes under it run without it
// (see .ci/run).
const raceEnabled = true

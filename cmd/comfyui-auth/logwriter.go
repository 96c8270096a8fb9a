package main

import (
	"bufio"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// logBuffer batches log lines into few write(2) calls. Unbuffered, every
// access-log line is one system call to a file or to Docker's log pipe,
// which on a small GET costs as much as a fifth of the gateway's own work
// (BenchmarkAccessLogLineToFile). Lines are held at most flushEvery;
// errors are written at once, as is everything at Close.
//
// zerolog hands over each event in one Write, and the mutex keeps a line
// whole even when it straddles a flush, so lines never interleave. A
// SIGKILL loses at most the last flushEvery of info lines; SIGTERM and
// SIGINT go through Close.
type logBuffer struct {
	mu     sync.Mutex
	w      *bufio.Writer
	closed bool // after Close, every line is written at once
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

const (
	logBufferSize = 64 << 10
	flushEvery    = 100 * time.Millisecond
)

var _ zerolog.LevelWriter = (*logBuffer)(nil)

func newLogBuffer(w io.Writer) *logBuffer {
	b := &logBuffer{w: bufio.NewWriterSize(w, logBufferSize), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushLoop()
	return b
}

func (b *logBuffer) Write(p []byte) (int, error) {
	return b.WriteLevel(zerolog.InfoLevel, p)
}

// WriteLevel writes errors through at once, with what is held before them:
// they often come just before the process ends. Warnings wait for the tick
// like info lines, because the access log reports every 5xx at warn, and a
// guess flood answered 503 must not turn each line back into a write(2).
func (b *logBuffer) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.w.Write(p)
	if err == nil && (l >= zerolog.ErrorLevel || b.closed) {
		err = b.w.Flush()
	}
	return n, err
}

func (b *logBuffer) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.w.Flush()
}

func (b *logBuffer) flushLoop() {
	defer close(b.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.flush()
		case <-b.stop:
			return
		}
	}
}

// Close stops the ticker and writes what is held; lines logged after it
// are written at once.
func (b *logBuffer) Close() {
	b.once.Do(func() { close(b.stop); <-b.done })
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	_ = b.w.Flush()
}

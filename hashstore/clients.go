package hashstore

import (
	"container/list"
	"math"
	"time"
)

// missHalfLife is how fast a client's misses are forgiven for queueing
// order: a client that stops guessing is back at the front within minutes.
const missHalfLife = time.Minute

// clientState is what the fair queue knows about one client. Its fields
// are guarded by Verifier.mu.
type clientState struct {
	key    string
	active int     // checks queued or running
	misses float64 // decayed count of wrong tokens and ClientBusy answers
	at     time.Time
	el     *list.Element
}

// score is the client's misses decayed to now.
func (c *clientState) score(now time.Time) float64 {
	if c.misses == 0 {
		return 0
	}
	return c.misses * math.Exp2(-float64(now.Sub(c.at))/float64(missHalfLife))
}

func (c *clientState) miss(now time.Time) {
	c.misses = c.score(now) + 1
	c.at = now
}

// before reports whether c is served before o: strictly fewer misses.
func (c *clientState) before(o *clientState, now time.Time) bool {
	return c.score(now) < o.score(now)
}

// clientTable is a bounded LRU of client states. An entry with active
// checks is never evicted; there are at most QueueLen+Workers of those, and
// the table holds more, so eviction always finds an idle one.
type clientTable struct {
	size  int
	items map[string]*clientState
	lru   *list.List // most recently used at the front
}

func newClientTable(size int) clientTable {
	return clientTable{size: size, items: map[string]*clientState{}, lru: list.New()}
}

// get returns key's state, creating it (and forgetting the least recently
// used idle client when full).
func (t *clientTable) get(key string, now time.Time) *clientState {
	if c, ok := t.items[key]; ok {
		t.lru.MoveToFront(c.el)
		return c
	}
	for len(t.items) >= t.size {
		el := t.lru.Back()
		for el != nil && el.Value.(*clientState).active > 0 {
			el = el.Prev()
		}
		if el == nil {
			break // cannot happen: size exceeds the jobs that pin entries
		}
		c := el.Value.(*clientState)
		t.lru.Remove(el)
		delete(t.items, c.key)
	}
	c := &clientState{key: key, at: now}
	c.el = t.lru.PushFront(c)
	t.items[key] = c
	return c
}

// release forgets an idle client with no misses left to remember; it keeps
// the table small when clients are well behaved.
func (t *clientTable) release(c *clientState) {
	if c.active == 0 && c.misses == 0 {
		if cur, ok := t.items[c.key]; ok && cur == c {
			t.lru.Remove(c.el)
			delete(t.items, c.key)
		}
	}
}

func (t *clientTable) len() int { return len(t.items) }

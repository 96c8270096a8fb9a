package hashstore

import (
	"container/list"
	"sync"
	"time"
)

// successCache remembers raw tokens that matched, keyed by an HMAC of the
// token under a per-process random key: the key is fixed-length and
// unambiguous, it depends only on what the client sent (never on stored
// secrets, see Traefik #13572 and #13816), and a memory dump does not give
// the tokens back. Only successes are stored, so a miss says nothing about
// whether a credential exists.
//
// An entry names the line it matched by its user and hash, so it outlives a
// reload that keeps that line (another user's revocation, a comment): it is
// then moved to the line's new place and generation; a reload that removes
// the line, or changes its hash, forgets it. One student's revocation thus
// does not send the whole class back through bcrypt.
type successCache struct {
	mu    sync.Mutex
	size  int
	ttl   time.Duration
	items map[[32]byte]*list.Element
	order *list.List // oldest insertion at the front
}

type cacheEntry struct {
	key     [32]byte
	gen     uint64
	line    int    // 1-based, in generation gen
	user    string // the line's user, "" for a bare line
	hash    string // the line's hash: what must still be loaded
	expires time.Time
}

// lineOf returns the 0-based index of the line of user with hash in snap,
// or -1 when snap has no such line.
func lineOf(snap *Snapshot, user, hash string) int {
	for _, i := range snap.UserLines(user) {
		if snap.Creds.Hashes[i] == hash {
			return i
		}
	}
	return -1
}

// follow moves e to snap's generation when snap still holds its line, and
// reports whether it does. The caller holds c.mu.
func (e *cacheEntry) follow(snap *Snapshot) bool {
	if e.gen == snap.Generation {
		return true
	}
	i := lineOf(snap, e.user, e.hash)
	if i < 0 {
		return false
	}
	e.gen, e.line = snap.Generation, i+1
	return true
}

func newSuccessCache(size int, ttl time.Duration) *successCache {
	return &successCache{size: size, ttl: ttl, items: map[[32]byte]*list.Element{}, order: list.New()}
}

// get returns the matched line, in snap, when key is cached and the line
// it matched is still in snap.
func (c *successCache) get(key [32]byte, snap *Snapshot, now time.Time) (int, bool) {
	if c.size <= 0 {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return 0, false
	}
	e := el.Value.(*cacheEntry)
	if now.After(e.expires) || !e.follow(snap) {
		c.order.Remove(el)
		delete(c.items, key)
		return 0, false
	}
	return e.line, true
}

// put caches key as a match of snap's line (1-based).
func (c *successCache) put(key [32]byte, snap *Snapshot, line int, now time.Time) {
	if c.size <= 0 || line < 1 || line > len(snap.Creds.Hashes) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
	if len(c.items) >= c.size {
		// Expired entries first, then the oldest.
		for el := c.order.Front(); el != nil; {
			next := el.Next()
			if e := el.Value.(*cacheEntry); now.After(e.expires) {
				c.order.Remove(el)
				delete(c.items, e.key)
			}
			el = next
		}
		for len(c.items) >= c.size {
			el := c.order.Front()
			c.order.Remove(el)
			delete(c.items, el.Value.(*cacheEntry).key)
		}
	}
	c.items[key] = c.order.PushBack(&cacheEntry{key: key, gen: snap.Generation, line: line,
		user: snap.Creds.userOf(line - 1), hash: snap.Creds.Hashes[line-1], expires: now.Add(c.ttl)})
}

// follow moves every entry whose line snap still holds to snap's
// generation and forgets the others, so a removed token is forgotten at
// once.
func (c *successCache) follow(snap *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.order.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*cacheEntry); !e.follow(snap) {
			c.order.Remove(el)
			delete(c.items, e.key)
		}
		el = next
	}
}

func (c *successCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

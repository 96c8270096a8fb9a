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
	line    int
	expires time.Time
}

func newSuccessCache(size int, ttl time.Duration) *successCache {
	return &successCache{size: size, ttl: ttl, items: map[[32]byte]*list.Element{}, order: list.New()}
}

// get returns the matched line when key is cached for generation gen.
func (c *successCache) get(key [32]byte, gen uint64, now time.Time) (int, bool) {
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
	if now.After(e.expires) || e.gen != gen {
		c.order.Remove(el)
		delete(c.items, key)
		return 0, false
	}
	return e.line, true
}

func (c *successCache) put(key [32]byte, gen uint64, line int, now time.Time) {
	if c.size <= 0 {
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
	c.items[key] = c.order.PushBack(&cacheEntry{key: key, gen: gen, line: line, expires: now.Add(c.ttl)})
}

func (c *successCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.items)
	c.order.Init()
}

func (c *successCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

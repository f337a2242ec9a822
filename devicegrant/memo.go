package devicegrant

import "sync"

// memo is a bounded in-memory cache that stays correct under concurrent
// invalidation. A reader that misses calls begin, reads the database, and
// puts what it read with the stamp begin gave it; a put is refused if the
// key (or everything) was forgotten after that begin, so a value read just
// before a change committed can never outlive the change's forget.
type memo[K comparable, V any] struct {
	mu      sync.Mutex
	clock   uint64
	vals    map[K]V
	forgot  map[K]uint64 // when each key was last forgotten, recent ones only
	allGone uint64       // when everything was last forgotten
	max     int
}

// maxForgotten bounds forgot; past it, forgetting everything is the
// conservative answer.
const maxForgotten = 4096

func newMemo[K comparable, V any](max int) *memo[K, V] {
	return &memo[K, V]{vals: make(map[K]V), forgot: make(map[K]uint64), max: max}
}

func (m *memo[K, V]) get(k K) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vals[k]
	return v, ok
}

// begin stamps a read that is about to start.
func (m *memo[K, V]) begin() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	return m.clock
}

// put keeps v for k unless k was forgotten since begun. When full, it
// drops an arbitrary entry first.
func (m *memo[K, V]) put(k K, v V, begun uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.allGone >= begun || m.forgot[k] >= begun {
		return
	}
	if _, ok := m.vals[k]; !ok && len(m.vals) >= m.max {
		for old := range m.vals {
			delete(m.vals, old)
			break
		}
	}
	m.vals[k] = v
}

// forget drops k, and refuses puts of reads that began before now.
func (m *memo[K, V]) forget(k K) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	delete(m.vals, k)
	if len(m.forgot) >= maxForgotten {
		clear(m.forgot)
		clear(m.vals)
		m.allGone = m.clock
		return
	}
	m.forgot[k] = m.clock
}

// forgetAll drops everything.
func (m *memo[K, V]) forgetAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	clear(m.vals)
	clear(m.forgot)
	m.allGone = m.clock
}

package devicegrant

import "testing"

// TestMemoRefusesStaleReads: a value read before its key was forgotten is
// not kept, so a grant read just before its approval committed cannot be
// answered from memory afterwards; what is read after is kept; the size
// stays bounded.
func TestMemoRefusesStaleReads(t *testing.T) {
	m := newMemo[string, int](3)
	begun := m.begin() // a poll starts reading grant "g"
	m.forget("g")      // the approval commits
	m.put("g", 1, begun)
	if _, ok := m.get("g"); ok {
		t.Fatal("a value read before its key was forgotten was kept")
	}
	m.put("g", 2, m.begin())
	if v, ok := m.get("g"); !ok || v != 2 {
		t.Fatalf("a value read after the forget: %d %v", v, ok)
	}
	begun = m.begin()
	m.forgetAll()
	m.put("h", 3, begun)
	if _, ok := m.get("h"); ok {
		t.Fatal("a value read before forgetAll was kept")
	}
	for i, k := range []string{"a", "b", "c", "d", "e"} {
		m.put(k, i, m.begin())
	}
	n := 0
	for _, k := range []string{"a", "b", "c", "d", "e", "g"} {
		if _, ok := m.get(k); ok {
			n++
		}
	}
	if n > 3 {
		t.Errorf("%d values kept, want at most 3", n)
	}
}

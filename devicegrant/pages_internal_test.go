package devicegrant

import "testing"

// TestPagesParse: every page's template parses, with the layout around
// it. New no longer parses them (they are parsed when first shown), so a
// broken template would otherwise only show up as an error page.
func TestPagesParse(t *testing.T) {
	for name, page := range lazyPages() {
		tmpl, err := page()
		if err != nil {
			t.Errorf("page %s: %v", name, err)
			continue
		}
		if tmpl.Lookup("layout") == nil {
			t.Errorf("page %s has no layout template", name)
		}
	}
}

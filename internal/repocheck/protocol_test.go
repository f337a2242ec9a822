package repocheck

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const protocolDoc = "docs/protocol.md"

// ruleRE matches a rule id, or a range of them such as P-DCR-1…7.
var ruleRE = regexp.MustCompile(`P-([A-Z]+)-([0-9]+)(?:…([0-9]+))?`)

// citedRules finds every rule id cited in the repository's Go, SQL,
// template and Markdown files (docs/protocol.md aside), expanding ranges,
// with one place each is cited.
func citedRules(t *testing.T, root string) map[string]string {
	t.Helper()
	cited := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "artifacts") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		switch filepath.Ext(path) {
		case ".go", ".sql", ".html", ".md", ".mjs":
		default:
			return nil
		}
		if rel == filepath.FromSlash(protocolDoc) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range bytes.Split(b, []byte("\n")) {
			for _, m := range ruleRE.FindAllSubmatch(line, -1) {
				from, _ := strconv.Atoi(string(m[2]))
				to := from
				if len(m[3]) > 0 {
					to, _ = strconv.Atoi(string(m[3]))
				}
				for n := from; n <= to; n++ {
					id := "P-" + string(m[1]) + "-" + strconv.Itoa(n)
					if _, ok := cited[id]; !ok {
						cited[id] = rel + ":" + strconv.Itoa(i+1)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cited
}

// docEntry is one rule's entry in docs/protocol.md.
type docEntry struct {
	id    string
	line  int
	lists map[string]string // "From", "Code", "Tests" → their text
}

var listRE = regexp.MustCompile(`^- \*\*(From|Code|Tests|Peer):\*\*\s*(.*)$`)

// readProtocolDoc parses the entries ("### P-XXX-N" headings and their
// From/Code/Tests lists, which may wrap onto indented lines).
func readProtocolDoc(t *testing.T, root string) []docEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(root, protocolDoc))
	if err != nil {
		t.Fatalf("%s: %v", protocolDoc, err)
	}
	defer f.Close()
	var entries []docEntry
	var cur *docEntry
	key := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			key = ""
			cur = nil
			if id, ok := strings.CutPrefix(line, "### "); ok && ruleRE.MatchString(id) {
				entries = append(entries, docEntry{id: strings.TrimSpace(id), line: n, lists: map[string]string{}})
				cur = &entries[len(entries)-1]
			}
		case cur == nil:
		case listRE.MatchString(line):
			m := listRE.FindStringSubmatch(line)
			key = m[1]
			cur.lists[key] = m[2]
		case key != "" && strings.HasPrefix(line, "  "):
			cur.lists[key] += " " + strings.TrimSpace(line)
		default:
			key = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return entries
}

// declaredNames collects the top-level names declared in the module's Go
// files (functions, methods, types and their fields, constants, variables)
// and, apart, the test functions.
func declaredNames(t *testing.T, root string) (names, tests map[string]bool) {
	t.Helper()
	names, tests = map[string]bool{}, map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		isTest := strings.HasSuffix(path, "_test.go")
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				names[d.Name.Name] = true
				if isTest && d.Recv == nil && (strings.HasPrefix(d.Name.Name, "Test") || strings.HasPrefix(d.Name.Name, "Fuzz")) {
					tests[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						names[s.Name.Name] = true
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, fld := range st.Fields.List {
								for _, n := range fld.Names {
									names[n.Name] = true // a setting or field the entry points at
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							names[n.Name] = true
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names, tests
}

var backquotedRE = regexp.MustCompile("`([^`]+)`")

// TestProtocolDoc keeps docs/protocol.md from rotting: every rule id cited
// anywhere in the repository has an entry; every entry says where the rule
// comes from, where it is applied and how it is tested; and every file and
// name an entry points at exists.
func TestProtocolDoc(t *testing.T) {
	root := moduleRoot(t)
	entries := readProtocolDoc(t, root)
	documented := map[string]bool{}
	for _, e := range entries {
		if documented[e.id] {
			t.Errorf("%s:%d: %s has a second entry", protocolDoc, e.line, e.id)
		}
		documented[e.id] = true
	}

	cited := citedRules(t, root)
	if len(cited) < 30 {
		t.Fatalf("found only %d cited rule ids; is the walk broken?", len(cited))
	}
	for _, id := range sortedKeys(cited) {
		if !documented[id] {
			t.Errorf("%s cites %s, which %s does not explain", cited[id], id, protocolDoc)
		}
	}

	names, tests := declaredNames(t, root)
	for _, e := range entries {
		for _, k := range []string{"From", "Code", "Tests"} {
			if strings.TrimSpace(e.lists[k]) == "" {
				t.Errorf("%s:%d: %s has no %s", protocolDoc, e.line, e.id, k)
			}
		}
		for _, k := range []string{"Code", "Tests"} {
			for _, m := range backquotedRE.FindAllStringSubmatch(e.lists[k], -1) {
				ref := m[1]
				switch {
				case strings.Contains(ref, "/") || strings.Contains(ref, "."):
					if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(ref))); err != nil {
						t.Errorf("%s:%d: %s names %s, which does not exist", protocolDoc, e.line, e.id, ref)
					}
				case k == "Tests" && (strings.HasPrefix(ref, "Test") || strings.HasPrefix(ref, "Fuzz")):
					if !tests[ref] {
						t.Errorf("%s:%d: %s names the test %s, which does not exist", protocolDoc, e.line, e.id, ref)
					}
				default:
					if !names[ref] {
						t.Errorf("%s:%d: %s names %s, declared nowhere in the module", protocolDoc, e.line, e.id, ref)
					}
				}
			}
		}
	}
	if !slices.ContainsFunc(entries, func(e docEntry) bool { return e.id == "P-DEV-5" }) {
		t.Error("the document parses to no P-DEV-5 entry; is the parser broken?")
	}
}

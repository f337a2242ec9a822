package repocheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/devicegrant/devicegrant"

// pkg is what go list says of one package.
type pkg struct {
	ImportPath string
	Dir        string
	Standard   bool
	DepOnly    bool
	GoFiles    []string
	Imports    []string // direct, of the non-test files
	Deps       []string // transitive, of the non-test files
}

// listPackages runs go list -deps -json over the module: the module's
// packages by path (tests excluded, so the arrows are those of the code
// that ships) and whether each dependency is in the standard library.
func listPackages(t *testing.T) (map[string]*pkg, map[string]bool, string) {
	t.Helper()
	root := moduleRoot(t)
	cmd := exec.Command("go", "list", "-deps", "-json", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	own, std := map[string]*pkg{}, map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		std[p.ImportPath] = p.Standard
		if !p.DepOnly && (p.ImportPath == module || strings.HasPrefix(p.ImportPath, module+"/")) {
			own[p.ImportPath] = &p
		}
	}
	if len(own) < 10 {
		t.Fatalf("go list found only %d packages of the module", len(own))
	}
	return own, std, root
}

// moduleRoot is the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == "/dev/null" {
		t.Fatal("not inside the module")
	}
	return filepath.Dir(gomod)
}

// under reports whether path is the module package rel or below it.
func under(path, rel string) bool {
	full := module + "/" + rel
	return path == full || strings.HasPrefix(path, full+"/")
}

// inModule reports whether path is a package of this module.
func inModule(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }

// hasPrefixPath reports whether path is one of the paths or below one.
func hasPrefixPath(path string, paths ...string) bool {
	for _, p := range paths {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// isTestHelper reports whether path is a package that exists for tests.
func isTestHelper(path string) bool {
	for _, h := range []string{"internal/devtest", "internal/fakesynapse", "internal/nodetest", "internal/pairtest", "internal/qrtest", "store/storetest", "store/postgres/pgtest"} {
		if under(path, h) {
			return true
		}
	}
	return false
}

// The third-party code that makes a package part of the OAuth server.
var serverThirdParty = []string{
	"github.com/gin-gonic/gin",
	"github.com/go-jose/go-jose/v4",
	"golang.org/x/oauth2",
	"github.com/mattn/go-sqlite3",
	"github.com/jackc/pgx/v5",
	"github.com/prometheus/client_golang",
}

// A rule is one arrow of docs/architecture.md ("The house"): for the
// packages it covers, a dependency it forbids.
type rule struct {
	name   string
	covers func(p *pkg) bool
	// direct: check only the package's own imports, not what they import.
	direct bool
	// forbids reports why dep may not be imported, or "".
	forbids func(dep string, std bool) string
}

var rules = []rule{{
	name:   "display knows nothing of OAuth or the server",
	covers: func(p *pkg) bool { return under(p.ImportPath, "display") },
	forbids: func(dep string, _ bool) string {
		if inModule(dep) && !under(dep, "display") {
			return "a module package outside display/"
		}
		if hasPrefixPath(dep, serverThirdParty...) {
			return "OAuth/server code"
		}
		return ""
	},
}, {
	name:   "store holds data, not rules: nothing of devicegrant or the other packages",
	covers: func(p *pkg) bool { return under(p.ImportPath, "store") },
	forbids: func(dep string, _ bool) string {
		if inModule(dep) && !under(dep, "store") {
			return "a module package outside store/"
		}
		if hasPrefixPath(dep, "github.com/gin-gonic/gin", "github.com/go-jose/go-jose/v4", "golang.org/x/oauth2") {
			return "OAuth/HTTP code"
		}
		return ""
	},
}, {
	name:   "the store interface is the standard library only, so every backend can implement it",
	covers: func(p *pkg) bool { return p.ImportPath == module+"/store" },
	forbids: func(dep string, std bool) string {
		if !std {
			return "not the standard library"
		}
		return ""
	},
}, {
	name:   "matrixpair needs only golang.org/x/oauth2 beyond the standard library (bots import it alone)",
	covers: func(p *pkg) bool { return p.ImportPath == module+"/matrixpair" },
	forbids: func(dep string, std bool) string {
		if !std && !hasPrefixPath(dep, "golang.org/x/oauth2") {
			return "neither the standard library nor golang.org/x/oauth2"
		}
		return ""
	},
}, {
	name:   "clientmeta is pure metadata checks: no server, no store, no HTTP",
	covers: func(p *pkg) bool { return p.ImportPath == module+"/devicegrant/clientmeta" },
	direct: true,
	forbids: func(dep string, _ bool) string {
		if inModule(dep) {
			return "a module package"
		}
		if dep == "net/http" || hasPrefixPath(dep, serverThirdParty...) {
			return "HTTP or server code"
		}
		return ""
	},
}, {
	name: "devicegrant works on the store interface, not a backend; it drives no hardware and uses no test helper or device-side code",
	covers: func(p *pkg) bool {
		return under(p.ImportPath, "devicegrant")
	},
	forbids: func(dep string, _ bool) string {
		switch {
		case under(dep, "store") && dep != module+"/store":
			return "a store backend (cmd/devicegrantd chooses it)"
		case under(dep, "display/panel") || hasPrefixPath(dep, "periph.io"):
			return "display hardware (cmd/devicegrantd drives panels)"
		case under(dep, "matrixpair") || under(dep, "cmd"):
			return "device-side or command code"
		}
		return ""
	},
}, {
	name: "code that ships uses no test helper",
	covers: func(p *pkg) bool {
		return !isTestHelper(p.ImportPath) && !under(p.ImportPath, "e2e") && !under(p.ImportPath, "internal/repocheck")
	},
	forbids: func(dep string, _ bool) string {
		if dep == "testing" || isTestHelper(dep) {
			return "a test helper"
		}
		return ""
	},
}, {
	name: "the benchmark measures devicegrantd from outside: cmd/devicegrant-bench wires internal/bench, which imports nothing of the server",
	covers: func(p *pkg) bool {
		return under(p.ImportPath, "cmd/devicegrant-bench") || under(p.ImportPath, "internal/bench")
	},
	forbids: func(dep string, _ bool) string {
		if inModule(dep) && !under(dep, "internal/bench") {
			return "a module package other than internal/bench"
		}
		return ""
	},
}, {
	name:   "cmd/matrix-pair only wires: it speaks no HTTP itself (matrixpair does) and holds nothing of the server",
	covers: func(p *pkg) bool { return p.ImportPath == module+"/cmd/matrix-pair" },
	direct: true,
	forbids: func(dep string, _ bool) string {
		if dep == "net/http" {
			return "HTTP belongs in matrixpair"
		}
		if under(dep, "devicegrant") || under(dep, "store") || hasPrefixPath(dep, "github.com/gin-gonic/gin") {
			return "server code"
		}
		return ""
	},
}, {
	name:   "cmd/devicegrantd only wires: it opens the store and hands it to devicegrant, which makes every protocol decision",
	covers: func(p *pkg) bool { return p.ImportPath == module+"/cmd/devicegrantd" },
	direct: true,
	forbids: func(dep string, _ bool) string {
		switch {
		case under(dep, "devicegrant/clientmeta"):
			return "protocol rules (devicegrant applies them)"
		case hasPrefixPath(dep, "github.com/go-jose/go-jose/v4", "golang.org/x/oauth2", "golang.org/x/crypto", "golang.org/x/time"):
			return "protocol mechanics (tokens, signatures, hashes, limits are devicegrant's)"
		}
		return ""
	},
}}

// TestBoundaries enforces the arrows between packages with go list: a
// forbidden import fails here, naming the rule, the package and the path
// of imports that brought it in.
func TestBoundaries(t *testing.T) {
	own, std, _ := listPackages(t)
	for _, r := range rules {
		covered := 0
		for _, path := range sortedKeys(own) {
			p := own[path]
			if !r.covers(p) || len(p.GoFiles) == 0 {
				continue
			}
			covered++
			deps := p.Deps
			if r.direct {
				deps = p.Imports
			}
			// One error per package: the forbidden dependency reached by
			// the shortest chain of imports, and how many there are.
			var bad, why string
			var chain []string
			n := 0
			for _, dep := range deps {
				w := r.forbids(dep, std[dep])
				if w == "" {
					continue
				}
				n++
				if c := importChain(own, path, dep); chain == nil || len(c) < len(chain) {
					bad, why, chain = dep, w, c
				}
			}
			if n > 0 {
				t.Errorf("%s:\n\t%s depends on %s (%s) via %s; %d forbidden dependencies in all",
					r.name, path, bad, why, strings.Join(chain, " → "), n)
			}
		}
		if covered == 0 {
			t.Errorf("rule %q covers no package: the package moved; update the rule", r.name)
		}
	}
}

// importChain finds a path of module-package imports from from to dep, for
// the error message.
func importChain(own map[string]*pkg, from, dep string) []string {
	type step struct {
		path string
		prev *step
	}
	seen := map[string]bool{from: true}
	queue := []*step{{path: from}}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		p := own[s.path]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if seen[imp] {
				continue
			}
			seen[imp] = true
			n := &step{path: imp, prev: s}
			if imp == dep || (own[imp] == nil && slices.Contains(depsOf(own, imp), dep)) {
				var chain []string
				for c := n; c != nil; c = c.prev {
					chain = append([]string{c.path}, chain...)
				}
				if imp != dep {
					chain = append(chain, "…", dep)
				}
				return chain
			}
			queue = append(queue, n)
		}
	}
	return []string{from, "…", dep}
}

// depsOf is nil for packages outside the module: go list -deps gives
// their paths, not their imports, so a chain stops at the first one.
func depsOf(own map[string]*pkg, path string) []string {
	if p := own[path]; p != nil {
		return p.Deps
	}
	return nil
}

// The names cmd/devicegrantd may use of the storage packages: the types it
// holds and hands on, the errors it reports, opening, checking and
// migrating a database. Records (store.User, …) and transactions (store.Tx)
// are not among them.
var devicegrantdMayName = map[string][]string{
	module + "/store":          {"Store", "Backuper", "ErrNotFound"},
	module + "/store/sqlite":   {"Open", "Check", "Store", "SchemaVersion", "Migrate"},
	module + "/store/postgres": {"Open", "Check", "CheckNotices", "IsURL", "CopyFromSQLite", "SchemaVersion", "Migrate"},
}

// TestDevicegrantdWritesThroughDevicegrant: cmd/devicegrantd may read the
// store it opened (admin listings) but never writes to it: no Update call,
// and of the storage packages only the names in devicegrantdMayName. Every
// change of state goes through devicegrant.Server, which applies the
// rules.
func TestDevicegrantdWritesThroughDevicegrant(t *testing.T) {
	own, _, _ := listPackages(t)
	p := own[module+"/cmd/devicegrantd"]
	if p == nil {
		t.Fatal("cmd/devicegrantd not found")
	}
	fset := token.NewFileSet()
	for _, name := range p.GoFiles {
		file := filepath.Join(p.Dir, name)
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		allowed := map[string][]string{} // local package name → names it may use
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			if names, ok := devicegrantdMayName[path]; ok {
				local := path[strings.LastIndexByte(path, '/')+1:]
				if imp.Name != nil {
					local = imp.Name.Name
				}
				allowed[local] = names
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && allowed[x.Name] != nil && !slices.Contains(allowed[x.Name], sel.Sel.Name) {
				t.Errorf("%s: uses %s.%s; the command names only %v of that package", fset.Position(sel.Pos()), x.Name, sel.Sel.Name, allowed[x.Name])
			}
			if sel.Sel.Name == "Update" {
				t.Errorf("%s: calls Update; the command writes through devicegrant.Server", fset.Position(sel.Pos()))
			}
			return true
		})
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

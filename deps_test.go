package ferry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// The import graph STYLE.md's layout promises, read from go list:
//
//   - the root package imports only the standard library;
//   - api, the wire contract, imports only the root package (and the
//     standard library);
//   - graceful, the library apps import, imports only the standard library;
//   - the host side (internal/agent/…) imports nothing of the server side
//     (internal/server/…, internal/orchestrator/…, internal/state/…,
//     internal/store/…), even through another package, nor the reverse;
//   - no other package depends on both sides, except the ones that wire
//     implementations together: internal/cli, cmd/, bench/, integration/,
//     and test helpers (packages named …test).
//
// A violation is named by the import that makes it, importer → imported,
// paths relative to the module, so fixing one import removes one entry.
const module = "github.com/ferrydeploy/ferry"

var (
	hostSide   = []string{"internal/agent"}
	serverSide = []string{"internal/server", "internal/orchestrator", "internal/state", "internal/store"}
	wiring     = []string{"internal/cli", "cmd", "bench", "integration"}
)

// knownViolations are the imports that break the layout and are being
// fixed: none today. The test fails for a violation not listed here, and
// for one listed that no longer occurs, so the list only shrinks.
var knownViolations = []string{}

// goPackage is what go list -json says of a package.
type goPackage struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Deps       []string
}

// violation is an import that breaks a rule of the layout.
type violation struct {
	from, to string   // module-relative, "." for the root package
	rule     string   // the rule, as a sentence
	brings   []string // for rules about what an import brings in: those packages
}

func (v violation) key() string { return v.from + " → " + v.to }

func (v violation) String() string {
	s := v.key() + ": " + v.rule
	if len(v.brings) > 0 {
		const most = 4
		s += " (it brings in " + strings.Join(v.brings[:min(len(v.brings), most)], ", ")
		if len(v.brings) > most {
			s += ", …"
		}
		s += ")"
	}
	return s
}

// rel names a module package by its path in the module.
func rel(p string) string {
	if p == module {
		return "."
	}
	return strings.TrimPrefix(p, module+"/")
}

// under reports whether module-relative p is one of dirs or inside one.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

func side(p string) string {
	switch {
	case under(p, hostSide):
		return "host"
	case under(p, serverSide):
		return "server"
	}
	return ""
}

// checkLayout returns the imports among pkgs (keyed by import path, as go
// list -deps lists them) that break the layout, sorted.
func checkLayout(pkgs map[string]goPackage) []violation {
	inModule := func(p string) bool { return p == module || strings.HasPrefix(p, module+"/") }
	// brought lists the module packages of each side that importing p
	// brings in: p itself and everything it depends on.
	brought := func(p string) (host, server []string) {
		for _, d := range append([]string{p}, pkgs[p].Deps...) {
			if !inModule(d) {
				continue
			}
			switch side(rel(d)) {
			case "host":
				host = append(host, rel(d))
			case "server":
				server = append(server, rel(d))
			}
		}
		return host, server
	}
	var out []violation
	for _, p := range pkgs {
		if !inModule(p.ImportPath) {
			continue
		}
		from := rel(p.ImportPath)
		shared := side(from) == "" && !under(from, wiring) && !strings.HasSuffix(from, "test")
		var sided []violation // a shared package's imports that bring in a side
		bringsHost, bringsServer := false, false
		for _, imp := range p.Imports {
			dep, listed := pkgs[imp]
			std := dep.Standard || !listed // "C" is not a package go list lists
			to := imp
			if inModule(imp) {
				to = rel(imp)
			}
			switch from {
			case ".":
				if !std {
					out = append(out, violation{from: from, to: to, rule: "the root package imports only the standard library"})
				}
				continue
			case "api":
				if !std && imp != module {
					out = append(out, violation{from: from, to: to, rule: "api, the wire contract, imports only the root package and the standard library"})
				}
				continue
			case "graceful":
				if !std {
					out = append(out, violation{from: from, to: to, rule: "graceful imports only the standard library"})
				}
				continue
			}
			if std {
				continue
			}
			if side(to) != "" && side(to) == side(from) {
				continue // to keeps the rules of its side itself
			}
			host, server := brought(imp)
			switch {
			case side(from) == "host" && len(server) > 0:
				out = append(out, violation{from: from, to: to, rule: "the host side imports nothing of the server side", brings: server})
			case side(from) == "server" && len(host) > 0:
				out = append(out, violation{from: from, to: to, rule: "the server side imports nothing of the host side", brings: host})
			case shared && len(host)+len(server) > 0:
				sided = append(sided, violation{from: from, to: to, brings: slices.Concat(host, server)})
				bringsHost = bringsHost || len(host) > 0
				bringsServer = bringsServer || len(server) > 0
			}
		}
		// A shared package may use one side; using both makes it wiring.
		if bringsHost && bringsServer {
			for _, v := range sided {
				v.rule = "only internal/cli, cmd/, bench/, integration/ and test helpers depend on both the host and the server side"
				out = append(out, v)
			}
		}
	}
	slices.SortFunc(out, func(a, b violation) int { return strings.Compare(a.key(), b.key()) })
	return out
}

// listPackages runs go list -deps on every package of the module.
func listPackages(t *testing.T) map[string]goPackage {
	t.Helper()
	goBin := testenv.NeedCommand(t, "go")
	var stderr bytes.Buffer
	cmd := exec.Command(goBin, "list", "-deps", "-json=ImportPath,Standard,Imports,Deps", "./...")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]goPackage{}
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	if _, ok := pkgs[module+"/api"]; !ok {
		t.Fatalf("go list listed no %s/api: run from the module root", module)
	}
	return pkgs
}

// TestLayout holds the module's imports to the layout above.
func TestLayout(t *testing.T) {
	found := checkLayout(listPackages(t))
	var fresh []string
	seen := map[string]bool{}
	for _, v := range found {
		seen[v.key()] = true
		if slices.Contains(knownViolations, v.key()) {
			t.Logf("known, being fixed: %s", v)
		} else {
			fresh = append(fresh, "  "+v.String())
		}
	}
	if len(fresh) > 0 {
		t.Errorf("imports that break the layout (STYLE.md, Layout):\n%s", strings.Join(fresh, "\n"))
	}
	for _, k := range knownViolations {
		if !seen[k] {
			t.Errorf("knownViolations lists %q, which no longer occurs: remove it from the list", k)
		}
	}
}

// TestCheckLayout runs the rules on small made-up graphs, one rule each.
func TestCheckLayout(t *testing.T) {
	std := func(names ...string) []goPackage {
		var ps []goPackage
		for _, n := range names {
			ps = append(ps, goPackage{ImportPath: n, Standard: true})
		}
		return ps
	}
	// A node is a module package; its imports are module-relative but
	// for fmt, net/http and paths with a dot in their first element.
	type node struct {
		path    string
		imports []string
	}
	graph := func(nodes ...node) map[string]goPackage {
		pkgs := map[string]goPackage{}
		for _, p := range std("fmt", "net/http") {
			pkgs[p.ImportPath] = p
		}
		abs := func(p string) string {
			switch {
			case p == ".":
				return module
			case p == "fmt" || p == "net/http" || strings.Contains(strings.Split(p, "/")[0], "."):
				return p
			}
			return module + "/" + p
		}
		for _, n := range nodes {
			p := goPackage{ImportPath: abs(n.path)}
			for _, i := range n.imports {
				p.Imports = append(p.Imports, abs(i))
			}
			pkgs[p.ImportPath] = p
		}
		pkgs["example.com/lib"] = goPackage{ImportPath: "example.com/lib"}
		// Deps, as go list computes them: everything reachable.
		for k, p := range pkgs {
			var deps []string
			var walk func(string)
			walk = func(q string) {
				for _, i := range pkgs[q].Imports {
					if !slices.Contains(deps, i) {
						deps = append(deps, i)
						walk(i)
					}
				}
			}
			walk(k)
			slices.Sort(deps)
			p.Deps = deps
			pkgs[k] = p
		}
		return pkgs
	}
	for _, tt := range []struct {
		name  string
		nodes []node
		want  []string // violation keys
	}{
		{"clean", []node{
			{".", []string{"fmt"}},
			{"api", []string{".", "fmt"}},
			{"graceful", []string{"net/http"}},
			{"internal/agent", []string{"api", "internal/spec", "example.com/lib"}},
			{"internal/server", []string{"api", "internal/spec", "internal/state"}},
			{"internal/state", nil},
			{"internal/spec", []string{"."}},
			{"internal/cli", []string{"internal/agent", "internal/server"}},
			{"client/clienttest", []string{"internal/agent", "internal/server"}},
		}, nil},
		{"root imports a module package", []node{{".", []string{"internal/spec"}}, {"internal/spec", nil}}, []string{". → internal/spec"}},
		{"root imports a third-party package", []node{{".", []string{"example.com/lib"}}}, []string{". → example.com/lib"}},
		{"api imports past the root", []node{{"api", []string{".", "internal/spec"}}, {".", nil}, {"internal/spec", nil}}, []string{"api → internal/spec"}},
		{"graceful imports a module package", []node{{"graceful", []string{"internal/spec"}}, {"internal/spec", nil}}, []string{"graceful → internal/spec"}},
		{"host imports server", []node{{"internal/agent/cache", []string{"internal/store/dir"}}, {"internal/store/dir", nil}}, []string{"internal/agent/cache → internal/store/dir"}},
		{"a side's package that breaks the rule is named, not its importers on that side", []node{
			{"internal/server", []string{"internal/server/ui"}},
			{"internal/server/ui", []string{"internal/agent"}},
			{"internal/agent", nil},
		}, []string{"internal/server/ui → internal/agent"}},
		{"server imports host through a shared package", []node{
			{"internal/orchestrator", []string{"internal/spec"}},
			{"internal/spec", []string{"internal/agent/health"}},
			{"internal/agent/health", nil},
		}, []string{"internal/orchestrator → internal/spec"}},
		{"shared package uses both sides", []node{
			{"internal/export", []string{"internal/agent/install", "internal/state"}},
			{"internal/agent/install", nil},
			{"internal/state", nil},
		}, []string{"internal/export → internal/agent/install", "internal/export → internal/state"}},
		{"shared package uses both sides through one import", []node{
			{"client", []string{"internal/both"}},
			{"internal/both", []string{"internal/agent", "internal/server"}},
			{"internal/agent", nil},
			{"internal/server", nil},
		}, []string{"client → internal/both", "internal/both → internal/agent", "internal/both → internal/server"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, v := range checkLayout(graph(tt.nodes...)) {
				got = append(got, v.key())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("violations %q, want %q", got, tt.want)
			}
		})
	}
}

package spec

import (
	"strings"
	"testing"
)

// FuzzParse: a ferry.yaml, however malformed, is parsed or refused with an
// error; an accepted one names its app and each process's command.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"app: hello\nbuild:\n  command: go build -o bin/hello ./cmd/hello\ninclude: [bin/]\nprocesses:\n  web:\n    command: bin/hello\n    port: 8080\n    health: {http: /healthz, interval: 1s}\n    scale: 2\n  worker: {command: bin/hello worker, stop_timeout: 30s}\nshared: [log/]\ndeploy: {strategy: rolling, batch: 25%, canary: 1}\nkeep_releases: 5\n",
		"app: x\nprocesses: {}\n", "app: \"\"\n", "processes:\n  web: 3\n", "app: a\nshared: [../etc]\n", "{", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		app, err := Parse(b)
		if err != nil {
			return
		}
		if app.Name == "" {
			t.Fatalf("accepted a ferry.yaml without an app name: %q", b)
		}
		for _, p := range app.Processes {
			if p.Name == "" || strings.TrimSpace(p.Command) == "" {
				t.Fatalf("accepted process %+v without a name or command", p)
			}
		}
	})
}

// FuzzProcfile: every accepted process has a name and a command, and no
// name comes twice.
func FuzzProcfile(f *testing.F) {
	for _, s := range []string{"web: bin/hello\nworker: bin/hello worker\n", "# c\n\nweb:bin/x", "web: a\nweb: b\n", ":", "a:", "\x00: x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		procs, err := ParseProcfile(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, p := range procs {
			if p.Name == "" || strings.TrimSpace(p.Command) == "" || seen[p.Name] {
				t.Fatalf("accepted %+v from %q", procs, b)
			}
			seen[p.Name] = true
		}
	})
}

package spec

import (
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
)

func TestParseDefaultsAndOrder(t *testing.T) {
	app, err := Parse([]byte(`app: hello
processes:
  web:
    command: bin/hello
    port: 8080
    health: {http: /healthz, interval: 1s}
    scale: 2
  worker:
    command: bin/hello worker
    stop_timeout: 30s
  admin:
    command: bin/admin
    port: 9000
    upgrade: handoff
`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range app.Processes {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "web,worker,admin" {
		t.Fatalf("order %v", names)
	}
	web, worker := app.Process("web"), app.Process("worker")
	if web.Upgrade != ferry.UpgradeProxy || web.Scale != 2 || web.StopTimeout != DefaultStopTimeout ||
		web.Health.Interval != time.Second || web.Health.Timeout != time.Second || web.Health.Healthy != 1 || web.Health.Unhealthy != 3 {
		t.Fatalf("web = %+v health %+v", web, web.Health)
	}
	if worker.Upgrade != ferry.UpgradeStopStart || worker.StopTimeout != 30*time.Second || worker.Scale != 1 {
		t.Fatalf("worker = %+v", worker)
	}
	if app.Process("admin").Upgrade != ferry.UpgradeHandoff || app.KeepReleases != 5 ||
		app.Deploy.Strategy != "rolling" || app.Deploy.Batch != "25%" || !app.Deploy.AutoRollback {
		t.Fatalf("app = %+v", app)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ yml, want string }{
		{"app: x\nprocesses:\n  web: {port: 80}\n", "processes.web.command: missing"},
		{"app: x\nprocesses:\n  web: {command: a, port: 70000}\n", "not a TCP port"},
		{"app: x\nprocesses:\n  web: {command: a, upgrade: proxy}\n", "needs a port"},
		{"app: x\nprocesses:\n  web: {command: a, upgrade: magic, port: 1}\n", "not one of"},
		{"app: x\nprocesses:\n  web: {command: a, stop_timeout: soon}\n", "stop_timeout"},
		{"app: x\nprocesses:\n  web: {command: a, port: 1, health: {}}\n", "exactly one"},
		{"app: x\ndeploy: {batch: 0}\n", "deploy.batch"},
		{"app: x\ndeploy: {strategy: yolo}\n", "deploy.strategy"},
		{"app: x\nshared: [../up]\n", "shared"},
		{"app: x\nkeep_releases: 1\n", "keep_releases"},
		{"app: x\nbuild: {go: ., command: make}\n", "not both"},
		{"name: x\n", "unknown field"},
		// Names, by ferry's one rule for each kind, saying what is wrong.
		{"app: Web\n", `app: "Web" is not a valid app name: 'W' is not allowed; use lowercase letters, digits, - and _`},
		{"app: " + strings.Repeat("a", 64) + "\n", "valid app name: it has 64 characters"},
		{"app: x\nprocesses:\n  web.1: {command: a}\n", `processes.web.1: "web.1" is not a valid process name: '.' is not allowed`},
	}
	for _, tt := range tests {
		if _, err := Parse([]byte(tt.yml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.yml, err, tt.want)
		}
	}
}

func TestParseProcfile(t *testing.T) {
	procs, err := ParseProcfile([]byte("# comment\nweb: bin/web -p $PORT\n\nworker:  bin/worker\n"))
	if err != nil || len(procs) != 2 || procs[0].Command != "bin/web -p $PORT" || procs[1].Name != "worker" {
		t.Fatalf("%+v %v", procs, err)
	}
	for _, bad := range []string{"web bin/web\n", "web:\n", "web: a\nweb: b\n", "we b: x\n"} {
		if _, err := ParseProcfile([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A bad name is told apart from a line that is no `name: command`.
	const want = `line 2: "web.1" is not a valid process name: '.' is not allowed`
	if _, err := ParseProcfile([]byte("web: a\nweb.1: b\n")); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("a process named web.1: %v, want %s…", err, want)
	}
}

// A process without a public port may still be checked over http on the
// $PORT the agent gives each instance.
func TestHTTPCheckWithoutPort(t *testing.T) {
	app, err := Parse([]byte("app: x\nprocesses:\n  worker: {command: a, health: {http: /healthz}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := app.Processes[0].Health; h == nil || h.HTTP != "/healthz" {
		t.Fatalf("health %+v", h)
	}
}

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// A third-party app under test: a directory ferry builds, and ferry.yaml
// bodies for its good release and its bad ones. Each bad release must
// cost no request: the old release keeps serving.
type thirdParty struct {
	name string
	path string                  // what the load asks for (every method)
	dir  string                  // source, with its ferry.yaml written per build
	yaml func(bad string) string // ferry.yaml for a release; bad is "", "crash" or "check"
	// why is what the agent says about each bad release.
	why map[string]string
}

// gunicornApp is a WSGI app served by Debian's gunicorn, which sends
// READY=1 as soon as its arbiter is up: before its workers have imported
// the app, so a release that crashes at import (or whose check fails)
// must be gated by its health check, not by READY=1.
func gunicornApp(t *testing.T) thirdParty {
	gunicorn := testenv.NeedCommand(t, "gunicorn")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "app.py"), []byte(`import os
if os.environ.get("CRASH_AT_IMPORT"):
    raise RuntimeError("this release crashes at import")

def application(environ, start_response):
    if environ["PATH_INFO"] == "/healthz":
        status = "500 Internal Server Error" if os.environ.get("CHECK_FAILS") else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"checked\n"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Release", os.environ.get("FERRY_RELEASE", ""))])
    return [b"hello from gunicorn\n"]
`), 0o644)
	return thirdParty{name: "gunicorn", path: "/", dir: dir, why: map[string]string{"crash": "exited before it was ready", "check": "not ready"},
		yaml: func(bad string) string {
			// env(1) execs gunicorn, so its pid is the instance's and its
			// READY=1 counts (a VAR=1 prefix would leave sh the parent).
			env := map[string]string{"": "", "crash": "env CRASH_AT_IMPORT=1 ", "check": "env CHECK_FAILS=1 "}[bad]
			return fmt.Sprintf(`app: wsgi
build:
  command: "true"
include: [app.py]
processes:
  web:
    command: %s%s --bind 127.0.0.1:$PORT --workers 2 --graceful-timeout 5 app:application
    port: PORT
    stop_timeout: 10s
    health: {http: /healthz, interval: 100ms}
`, env, gunicorn)
		}}
}

// expressApp is an Express app from npm: its node_modules come from the
// npm registry in its build.command.
func expressApp(t *testing.T) thirdParty {
	testenv.NeedCommand(t, "npm")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"express-app","version":"1.0.0","private":true,"dependencies":{"express":"4.21.2"}}`), 0o644)
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(`const express = require("express");
if (process.env.CRASH_AT_START) { throw new Error("this release crashes at start"); }
const app = express();
app.get("/healthz", (req, res) => res.status(process.env.CHECK_FAILS ? 500 : 200).send("checked\n"));
app.all("/", (req, res) => { res.set("X-Release", process.env.FERRY_RELEASE || ""); res.send("hello from express\n"); });
const server = app.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`), 0o644)
	return thirdParty{name: "express", path: "/", dir: dir, why: map[string]string{"crash": "exited before it was ready", "check": "not ready"},
		yaml: func(bad string) string {
			env := map[string]string{"": "", "crash": "CRASH_AT_START=1 ", "check": "CHECK_FAILS=1 "}[bad]
			return fmt.Sprintf(`app: express-app
build:
  command: npm install --omit=dev --no-audit --no-fund --loglevel=error
include: [server.js, package.json, node_modules/]
processes:
  web:
    command: %snode server.js
    port: PORT
    stop_timeout: 10s
    health: {http: /healthz, interval: 100ms}
`, env)
		}}
}

// httpbinApp is go-httpbin from the Go module proxy, a Go server this
// project did not write; its bad check asks it for a 500.
func httpbinApp(t *testing.T) thirdParty {
	dir := t.TempDir()
	mod := t.TempDir()
	for _, args := range [][]string{
		{"mod", "init", "httpbin-build"},
		{"get", "github.com/mccutchen/go-httpbin/v2@v2.18.3"},
		{"build", "-o", filepath.Join(dir, "bin", "go-httpbin"), "github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = mod
		if out, err := cmd.CombinedOutput(); err != nil {
			testenv.SkipUnlessCI(t, "go %s: %v (the Go module proxy is needed)\n%s", strings.Join(args, " "), err, out)
		}
	}
	return thirdParty{name: "go-httpbin", path: "/anything", dir: dir, why: map[string]string{"crash": "exited before it was ready", "check": "not ready"},
		yaml: func(bad string) string {
			flag := map[string]string{"": "", "crash": " -no-such-flag", "check": ""}[bad]
			check := map[string]string{"": "/status/200", "crash": "/status/200", "check": "/status/500"}[bad]
			return fmt.Sprintf(`app: httpbin
build:
  command: "true"
include: [bin/]
processes:
  web:
    command: bin/go-httpbin -host 127.0.0.1 -port $PORT%s
    port: PORT
    stop_timeout: 10s
    health: {http: %s, interval: 100ms}
`, flag, check)
		}}
}

// TestThirdPartyApps deploys apps ferry did not write — gunicorn, an
// Express app from npm, go-httpbin from the module proxy — through the real
// agent binary, upgrades them under load, stops the agent with SIGTERM and
// kills it with SIGKILL (a new one adopts the app each time), deploys a
// release that crashes at start and one whose check fails, and goes back to
// the first release: no request may fail, keep-alive, POST or fresh
// connection.
func TestThirdPartyApps(t *testing.T) {
	for _, tc := range []struct {
		name string
		mk   func(*testing.T) thirdParty
	}{{"gunicorn", gunicornApp}, {"express", expressApp}, {"go-httpbin", httpbinApp}} {
		t.Run(tc.name, func(t *testing.T) {
			app := tc.mk(t)
			port := freeTCPPort(t)
			type art struct{ path, sum string }
			build := func(version, bad string) art {
				yaml := strings.Replace(app.yaml(bad), "port: PORT", fmt.Sprintf("port: %d", port), 1)
				if err := os.WriteFile(filepath.Join(app.dir, "ferry.yaml"), []byte(yaml), 0o644); err != nil {
					t.Fatal(err)
				}
				p, s := buildDir(t, app.dir, version)
				return art{p, s}
			}
			v1, v2 := build("1.0.0", ""), build("2.0.0", "")
			crash, check := build("3.0.0-crash", "crash"), build("3.0.0-check", "check")
			root := t.TempDir()
			desired := filepath.Join(t.TempDir(), "desired.yaml")
			appName := strings.SplitN(strings.TrimPrefix(app.yaml(""), "app: "), "\n", 2)[0]
			deploy := func(a art) {
				doc := fmt.Sprintf("apps:\n  %s:\n    artifact: %s\n    sha256: %s\n", appName, a.path, a.sum)
				os.WriteFile(desired+".tmp", []byte(doc), 0o644)
				os.Rename(desired+".tmp", desired)
			}
			running := func(a art) func(agentStatus) bool {
				return func(st agentStatus) bool {
					s := st.Apps[appName]
					if s.State != "running" || s.SHA256 != a.sum || len(s.Processes) != 1 {
						return false
					}
					return s.Processes[0].Health == "healthy"
				}
			}
			deploy(v1)
			agent := startAgentBinary(t, root, desired, "--health-timeout", "5s")
			defer func() {
				os.WriteFile(desired, []byte("apps: {}\n"), 0o644)
				waitStatus(t, root, "stopped", func(st agentStatus) bool { return len(st.Apps[appName].Processes) == 0 })
			}()
			waitStatus(t, root, "v1 running", running(v1))
			stop := make(chan struct{})
			l := startLoad(fmt.Sprintf("http://127.0.0.1:%d%s", port, app.path), stop)
			deploy(v2)
			waitStatus(t, root, "upgraded to v2", running(v2))
			// The agent stopped as systemctl restart stops it, and killed;
			// each time a new one adopts the app, and nothing fails.
			for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
				agent.Process.Signal(sig)
				agent.Wait()
				agent = startAgentBinary(t, root, desired, "--health-timeout", "5s")
				pid := agent.Process.Pid
				waitStatus(t, root, fmt.Sprintf("adopted after %v", sig), func(st agentStatus) bool { return st.Agent == pid && running(v2)(st) })
			}
			for _, bad := range []struct {
				name string
				a    art
			}{{"crash", crash}, {"check", check}} {
				deploy(bad.a)
				waitStatus(t, root, "the release that fails its "+bad.name+" rejected", func(st agentStatus) bool {
					s := st.Apps[appName]
					return s.State == "failed" && strings.Contains(s.Error, app.why[bad.name])
				})
				waitStatus(t, root, "v2 still serving", func(st agentStatus) bool {
					s := st.Apps[appName]
					return s.SHA256 == v2.sum && len(s.Processes) == 1 && s.Processes[0].Health == "healthy"
				})
			}
			deploy(v1) // back to the first release, as a rollback does
			waitStatus(t, root, "back on v1", running(v1))
			close(stop)
			l.wg.Wait()
			t.Logf("%s: %d requests ok, %d failed, answered by %v", app.name, l.ok.Load(), l.failed.Load(), l.releases)
			if l.failed.Load() > 0 {
				t.Errorf("%d requests failed, e.g. %s", l.failed.Load(), strings.Join(l.errs, "; "))
			}
			if l.ok.Load() == 0 {
				t.Error("no request was answered: the load proves nothing")
			}
		})
	}
}

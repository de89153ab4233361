package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestPostHookAsNonRoot: an agent that is not root runs a post hook that
// writes into the new release (a prepare step: npm ci, a build), as
// StrongLoop's plan prepares a release on the host; the release is
// read-only once the hook is done, and a hook that fails says why with
// the last lines it printed.
func TestPostHookAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipUnlessCIRoot(t, "the test runs the agent as another user, which needs root")
	}
	const nobody = 65534
	app := t.TempDir()
	os.WriteFile(filepath.Join(app, "ferry.yaml"), []byte(`app: prep
build:
  command: "true"
include: [bin/]
hooks:
  post: ["mkdir -p generated && echo prepared > generated/asset && echo \"prepared $FERRY_RELEASE in $PWD\""]
processes:
  web:
    command: bin/serve
    health: {exec: "test -f generated/asset", interval: 100ms}
`), 0o644)
	os.MkdirAll(filepath.Join(app, "bin"), 0o755)
	os.WriteFile(filepath.Join(app, "bin", "serve"), []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755)
	art, sum := buildDir(t, app, "1.0.0")
	bad := strings.Replace(string(must(os.ReadFile(filepath.Join(app, "ferry.yaml")))), `post: ["mkdir`, `post: ["echo npm ERR! code E404 >&2; echo npm ERR! 404 Not Found: left-pad@9.9.9 >&2; exit 1", "mkdir`, 1)
	os.WriteFile(filepath.Join(app, "ferry.yaml"), []byte(bad), 0o644)
	badArt, badSum := buildDir(t, app, "2.0.0")

	// Everything the agent touches belongs to nobody; the artifacts must
	// be readable by it.
	top := t.TempDir()
	os.Chmod(top, 0o755)
	root, desired := filepath.Join(top, "root"), filepath.Join(top, "desired.yaml")
	os.MkdirAll(root, 0o755)
	os.Chown(root, nobody, nobody)
	for _, a := range []string{art, badArt, ferryBin} {
		if fi, err := os.Stat(a); err == nil {
			os.Chmod(a, fi.Mode().Perm()|0o444)
		}
		for d := filepath.Dir(a); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
	}
	write := func(a, s string) {
		os.WriteFile(desired, []byte(fmt.Sprintf("apps:\n  prep:\n    artifact: file://%s\n    sha256: %s\n", a, s)), 0o644)
	}
	write(art, sum)
	cmd := exec.Command(ferryBin, "agent", "--root", root, "--desired", desired, "--health-timeout", "5s")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Env = append(os.Environ(), "HOME="+root)
	logf, _ := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		killUnder(root)
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("agent log:\n%s", b)
		}
	})
	st := waitStatus(t, root, "the prepared release running", func(st agentStatus) bool {
		a := st.Apps["prep"]
		return a.State == "running" && a.SHA256 == sum && len(a.Processes) == 1 && a.Processes[0].Health == "healthy"
	})
	rel := filepath.Join(root, "apps", "prep", "releases", st.Apps["prep"].Release)
	if b, err := os.ReadFile(filepath.Join(rel, "generated", "asset")); err != nil || string(b) != "prepared\n" {
		t.Errorf("the post hook's file: %q %v", b, err)
	}
	for _, p := range []string{rel, filepath.Join(rel, "generated"), filepath.Join(rel, "generated", "asset")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s after its post hook: %v %v, want it read-only", p, fi.Mode(), err)
		}
	}
	hookLog := must(os.ReadFile(filepath.Join(root, "apps", "prep", "hooks.log")))
	if !strings.Contains(string(hookLog), "prepared ") {
		t.Errorf("hooks.log lacks the hook's output:\n%s", hookLog)
	}

	write(badArt, badSum)
	st = waitStatus(t, root, "the release whose post hook fails rejected", func(st agentStatus) bool {
		return st.Apps["prep"].State == "failed"
	})
	if e := st.Apps["prep"].Error; !strings.Contains(e, "post hook") {
		t.Errorf("error %q does not name the post hook", e)
	}
	r := ferry(t, "", nil, "agent", "status", "--root", root, "-o", "json")
	if !strings.Contains(r.stdout, "left-pad@9.9.9") || !strings.Contains(r.stdout, `"kind": "hook"`) {
		t.Errorf("agent status does not carry the hook's failure and last output:\n%s", r.stdout)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestNodePreparedByPostHookAsNonRoot: an Express app whose artifact holds
// no node_modules is prepared on the host by its post hook, `npm install`
// against the npm registry, run by an agent that is not root — StrongLoop's
// "prepare" step — and then serves.
func TestNodePreparedByPostHookAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipUnlessCIRoot(t, "the test runs the agent as another user, which needs root")
	}
	testenv.NeedCommand(t, "npm")
	const nobody = 65534
	port := freeTCPPort(t)
	app := t.TempDir()
	os.WriteFile(filepath.Join(app, "package.json"), []byte(`{"name":"prep-node","version":"1.0.0","private":true,"dependencies":{"express":"4.21.2"}}`), 0o644)
	os.WriteFile(filepath.Join(app, "server.js"), []byte(`const express = require("express");
const app = express();
app.get("/healthz", (req, res) => res.send("ok\n"));
app.get("/", (req, res) => res.send("prepared on the host\n"));
const server = app.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`), 0o644)
	os.WriteFile(filepath.Join(app, "ferry.yaml"), []byte(fmt.Sprintf(`app: prep-node
build:
  command: "true"
include: [server.js, package.json]
hooks:
  post: ["npm install --omit=dev --no-audit --no-fund --loglevel=error"]
processes:
  web:
    command: node server.js
    port: %d
    health: {http: /healthz, interval: 100ms}
`, port)), 0o644)
	art, sum := buildDir(t, app, "1.0.0")

	top := t.TempDir()
	os.Chmod(top, 0o755)
	root, desired, home := filepath.Join(top, "root"), filepath.Join(top, "desired.yaml"), filepath.Join(top, "home")
	for _, d := range []string{root, home} {
		os.MkdirAll(d, 0o755)
		os.Chown(d, nobody, nobody)
	}
	for _, a := range []string{art, ferryBin} {
		if fi, err := os.Stat(a); err == nil {
			os.Chmod(a, fi.Mode().Perm()|0o444)
		}
		for d := filepath.Dir(a); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
	}
	os.WriteFile(desired, []byte(fmt.Sprintf("apps:\n  prep-node:\n    artifact: file://%s\n    sha256: %s\n", art, sum)), 0o644)
	cmd := exec.Command(ferryBin, "agent", "--root", root, "--desired", desired, "--health-timeout", "60s")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(home, ".npm"))
	logf, _ := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		killUnder(root)
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			hooks, _ := os.ReadFile(filepath.Join(root, "apps", "prep-node", "hooks.log"))
			t.Logf("agent log:\n%s\nhooks.log:\n%s", b, hooks)
		}
	})
	deadline := time.Now().Add(3 * time.Minute) // npm install from the registry
	for {
		st := status(t, root)
		a := st.Apps["prep-node"]
		if a.State == "running" && len(a.Processes) == 1 && a.Processes[0].Health == "healthy" {
			break
		}
		if a.State == "failed" || time.Now().After(deadline) {
			t.Fatalf("the prepared release: %+v", a)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "prepared on the host\n" {
		t.Errorf("the app answered %q", b)
	}
	rel := filepath.Join(root, "apps", "prep-node", "current")
	if fi, err := os.Stat(filepath.Join(rel, "node_modules", "express", "package.json")); err != nil || fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("node_modules in the release: %v %v, want it there and read-only", fi, err)
	}
}

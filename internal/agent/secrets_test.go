package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestSecretsOnlyInEnvFile: the app's config (secrets among it) is on the
// host only in the release's env file. state.json holds a digest; an
// agent restarted from it still starts instances with the config (read
// back from the env file) and does not redeploy; an app dropped from the
// document (its host left the group) takes its env files with it.
func TestSecretsOnlyInEnvFile(t *testing.T) {
	root := t.TempDir()
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	art, sum := buildApp(t, "app", "v1", healthyWeb)
	const secret = "s3cr3t-0f-the-group"
	doc := "apps:\n" + entry("app", art, sum, "    env: {GREETING: "+secret+"}\n")
	writeDesired(t, desiredPath, doc)
	ta := startAgent(t, root, desiredPath)
	st := ta.until("running", 20*time.Second, running("app", sum, 2))
	rel := st.Apps["app"].Release
	noSecret := func(when string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, StateFile))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("%s: state.json holds the config value:\n%s", when, b)
		}
	}
	noSecret("after the deploy")
	envFile := filepath.Join(root, AppsDir, "app", "env", rel)
	if b, err := os.ReadFile(envFile); err != nil || !strings.Contains(string(b), secret) {
		t.Fatalf("env file %s: %q %v; want the config in it", envFile, b, err)
	}

	// A restarted agent adopts the instances without redeploying, and an
	// instance that crashes afterwards comes back with its config.
	before := pids(st.Apps["app"])
	ta.stop()
	ta2 := startAgent(t, root, desiredPath)
	st = ta2.until("adopted", 20*time.Second, running("app", sum, 2))
	if got := pids(st.Apps["app"]); len(got) != len(before) || got[0] != before[0] || got[1] != before[1] {
		t.Fatalf("after the restart pids are %v, want the adopted %v: the agent redeployed", got, before)
	}
	log := filepath.Join(root, AppsDir, "app", "logs", "web.1.log")
	os.Truncate(log, 0)
	syscall.Kill(-before[0], syscall.SIGKILL)
	ta2.until("web.1 restarted with its config", 20*time.Second, func(st *State) bool {
		if !running("app", sum, 2)(st) || pids(st.Apps["app"])[0] == before[0] {
			return false
		}
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "greeting="+secret)
	})
	noSecret("after the restart")

	// The app leaves this host: stopped, and no copy of its config stays.
	writeDesired(t, desiredPath, "apps: {}\n")
	ta2.until("stopped", 20*time.Second, func(st *State) bool {
		as := st.Apps["app"]
		return as != nil && as.State == AppStopped && len(as.Processes) == 0
	})
	if _, err := os.Stat(filepath.Join(root, AppsDir, "app", "env")); !os.IsNotExist(err) {
		t.Errorf("the app's env files outlived it: %v", err)
	}
	noSecret("after the app left")
}

// TestRefusesAnotherArch: an artifact built for another os/arch is refused
// before anything stops, naming both; the running release keeps running.
func TestRefusesAnotherArch(t *testing.T) {
	root := t.TempDir()
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	art, sum := buildApp(t, "app", "v1", healthyWeb)
	writeDesired(t, desiredPath, "apps:\n"+entry("app", art, sum, ""))
	ta := startAgent(t, root, desiredPath)
	st := ta.until("v1 running", 20*time.Second, running("app", sum, 2))
	before := pids(st.Apps["app"])

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte("app: app\nbuild:\n  command: \"true\"\ninclude: [bin/]\n"+healthyWeb), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "serve"), []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	res, err := artifact.Build(context.Background(), dir, artifact.BuildOptions{Version: "v2", Arch: other, OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	writeDesired(t, desiredPath, "apps:\n"+entry("app", res.Path, res.SHA256, ""))
	st = ta.until("v2 refused", 20*time.Second, func(st *State) bool { return st.Apps["app"].State == AppFailed })
	as := st.Apps["app"]
	if !strings.Contains(as.Error, "built for linux/"+other) || as.Failure == nil || as.Failure.Kind != "config" {
		t.Errorf("the refusal says %q (%+v)", as.Error, as.Failure)
	}
	if got := pids(as); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("the running release's processes changed from %v to %v", before, got)
	}
}

// TestProcessUserAndLimits: a process with user: runs as that user (and
// so does its exec health check), with its limits: set before it starts;
// its release is its group's to read and no one else's.
func TestProcessUserAndLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipUnlessCIRoot(t, "running a process as another user needs a root agent")
	}
	top := t.TempDir()
	os.Chmod(top, 0o755)
	for d := filepath.Dir(top); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	root := filepath.Join(top, "root")
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	art, sum := buildApp(t, "app", "v1", `processes:
  web:
    command: bin/serve
    user: nobody
    limits: {nofile: 4321, nproc: 777}
    health: {exec: "test \"$(id -u)\" = 65534", interval: 50ms}
`)
	writeDesired(t, desiredPath, "apps:\n"+entry("app", art, sum, ""))
	ta := startAgent(t, root, desiredPath, func(c *Config) { c.Self = os.Args[0] })
	st := ta.until("running as nobody", 20*time.Second, running("app", sum, 1))
	pid := st.Apps["app"].Processes[0].PID
	// Its exec check (run as nobody itself) may pass while the shim,
	// under the race detector a slow start, has yet to exec the app.
	var status []byte
	testenv.WaitFor(t, "the process to run as nobody", 10*time.Second, func() bool {
		status, _ = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		return strings.Contains(string(status), "\nUid:\t65534\t65534\t65534\t65534\n")
	})
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	for _, want := range []string{`Max open files\s+4321\s+4321`, `Max processes\s+777\s+777`} {
		if !regexp.MustCompile(want).Match(limits) {
			t.Errorf("limits lack %s:\n%s", want, limits)
		}
	}
	rel := filepath.Join(root, AppsDir, "app", "releases", st.Apps["app"].Release)
	for _, p := range []string{filepath.Join(root, AppsDir, "app"), rel, filepath.Join(rel, "bin", "serve")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if sys := fi.Sys().(*syscall.Stat_t); sys.Gid != 65534 || fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s: group %d, mode %v; want the app's group (65534) and nothing for others", p, sys.Gid, fi.Mode())
		}
	}
}

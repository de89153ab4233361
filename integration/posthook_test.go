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

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client/clienttest"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/server"
)

// testRoot is ferry's root command with this file set's commands attached
// where root.go does not wire them (yet).
func testRoot(env Env) *cobra.Command {
	root := newRoot(env)
	has := func(parent *cobra.Command, name string) bool {
		for _, c := range parent.Commands() {
			if c.Name() == name {
				return true
			}
		}
		return false
	}
	for _, c := range []*cobra.Command{newLogin(env), newPublish(env), newDeploy(env), newRollback(env), newPromote(env),
		newStatus(env), newReleases(env), newHistory(env), newToken(env), newLock(env)} {
		if !has(root, c.Name()) {
			root.AddCommand(c)
		}
	}
	for _, c := range root.Commands() {
		if c.Name() == "agent" && !has(c, "join-token") {
			c.AddCommand(newAgentJoinToken(env))
		}
	}
	return root
}

// runCLIStreams runs ferry args in-process as Run does and returns what it
// wrote to stdout and stderr and its exit code.
func runCLIStreams(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut}
	root := testRoot(env)
	root.SetArgs(args)
	ctx := context.Background()
	err := root.ExecuteContext(ctx)
	code = ExitCode(ctx, err)
	if err != nil {
		fmt.Fprintf(&errOut, "ferry: %v\n", err)
	}
	return out.String(), errOut.String(), code
}

// runCLI is runCLIStreams with stdout and stderr together.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, errOut, code := runCLIStreams(t, "", args...)
	return out + errOut, code
}

func TestLoginUsage(t *testing.T) {
	isolateLogin(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"login"}, "accepts 1 arg"},
		{[]string{"login", "https://x:7400"}, "--token is required"},
		{[]string{"login", "https://x:7400", "--token", "t", "--ca-sha256", "abc"}, "64 hex digits"},
		{[]string{"login", "https://x:7400", "--token", "t", "--ca-sha256", strings.Repeat("g", 64)}, `--ca-sha256, the CA certificate's sha256: "` + strings.Repeat("g", 64) + `" is not a sha256: 'g' is not a hex digit (0-9, a-f)`},
		{[]string{"login", "ftp://x", "--token", "t"}, "use https://HOST:PORT"},
	} {
		out, code := runCLI(t, tc.args...)
		if code != ExitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("ferry %v: exit %d, output %q; want 2 and %q", tc.args, code, out, tc.want)
		}
	}
}

func TestLoginUnreachable(t *testing.T) {
	path := isolateLogin(t)
	out, code := runCLI(t, "login", "https://127.0.0.1:1", "--token", "t")
	if code != ExitFailure || !strings.Contains(out, "cannot reach ferry server https://127.0.0.1:1") {
		t.Errorf("exit %d, output %q", code, out)
	}
	if _, err := readClientConfig(path); err != nil {
		t.Fatal(err)
	}
	if c, _ := readClientConfig(path); c.Token != "" {
		t.Errorf("a failed login saved %+v", c)
	}
}

// startServer runs a real control server on loopback until the test ends
// and logs the CLI in to it as admin (in an isolated config dir).
func startServer(t *testing.T) *server.Server {
	t.Helper()
	isolateLogin(t)
	srv := clienttest.StartServer(t)
	out, code := runCLI(t, "login", srv.URL(), "--token", srv.AdminToken(), "--ca-sha256", srv.CASHA256())
	if code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	return srv
}

func TestLoginPublishStatusAgainstServer(t *testing.T) {
	srv := startServer(t)
	path, _ := clientConfigPath(os.Getenv)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config after login: %v, %v", fi, err)
	}
	saved, _ := readClientConfig(path)
	if saved.Server != srv.URL() || saved.Token != srv.AdminToken() || saved.CASHA256 != srv.CASHA256() {
		t.Errorf("saved %+v", saved)
	}

	// A bad token is refused and not saved over the good login.
	out, code := runCLI(t, "login", srv.URL(), "--token", "fy_wrong", "--ca-sha256", srv.CASHA256())
	if code != ExitFailure || !strings.Contains(out, "login:") {
		t.Errorf("bad token: exit %d: %s", code, out)
	}
	if again, _ := readClientConfig(path); again != saved {
		t.Errorf("a failed login changed the config to %+v", again)
	}
	// The token from stdin.
	if _, errOut, code := runCLIStreams(t, srv.AdminToken()+"\n", "login", srv.URL(), "--token", "-", "--ca-sha256", srv.CASHA256()); code != 0 {
		t.Errorf("login --token -: exit %d: %s", code, errOut)
	}

	// publish: the newest dist/ artifact of the current directory.
	work := t.TempDir()
	clienttest.WriteArtifact(t, filepath.Join(work, "dist"), "hello", "v1.0.0", 0)
	t.Chdir(work)
	stdout, stderr, code := runCLIStreams(t, "", "publish")
	if code != 0 || !strings.Contains(stdout, "hello v1.0.0 published") || !strings.Contains(stderr, "100%") {
		t.Fatalf("publish: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = runCLIStreams(t, "", "publish", "dist/hello-v1.0.0.tar.zst")
	if code != 0 || !strings.Contains(stdout, "hello v1.0.0 already on the server") || stderr != "" {
		t.Errorf("second publish: exit %d\n%s\n%s", code, stdout, stderr)
	}
	out, code = runCLI(t, "publish", "-o", "json", "dist/hello-v1.0.0.tar.zst")
	var art api.Artifact
	if code != 0 || json.Unmarshal([]byte(out), &art) != nil || !art.Existed || art.App != "hello" {
		t.Errorf("publish -o json: exit %d: %s", code, out)
	}

	// A host joins (as an agent does) and reports.
	stdout, _, code = runCLIStreams(t, "", "agent", "join-token", "--group", "prod", "-o", "json")
	var jt struct {
		api.TokenCreated
		Command string `json:"command"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &jt) != nil || jt.Secret == "" ||
		jt.Command != "FERRY_JOIN_TOKEN="+jt.Secret+" ferry agent --server "+srv.URL()+" --ca-sha256 "+srv.CASHA256() {
		t.Fatalf("join-token: exit %d: %s", code, stdout)
	}
	ag := clienttest.Join(t, srv, jt.Secret, "web-1")
	if err := ag.Report(t.Context(), api.Report{State: api.HostReport{Host: "web-1", Apps: map[string]*api.AppStatus{
		"hello": {Label: "v1", State: agent.AppRunning, Processes: []api.ProcessStatus{{Process: "web", Instance: 1, State: supervise.StateRunning, Health: health.Healthy}}},
	}}}); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "status")
	if code != 0 || !regexp.MustCompile(`web-1\s+prod\s+hello\s+v1\s+web 1/1\s+healthy\s+-\s+(just now|\ds ago)`).MatchString(out) {
		t.Errorf("status: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, "status", "hello", "-o", "json")
	var st api.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Hosts) != 1 {
		t.Errorf("status -o json: exit %d: %s", code, out)
	}
	out, code = runCLI(t, "history")
	if code != 0 || !strings.Contains(out, "publish") {
		t.Errorf("history: exit %d:\n%s", code, out)
	}
}

func TestTokensAgainstServer(t *testing.T) {
	startServer(t)
	stdout, stderr, code := runCLIStreams(t, "", "token", "create", "--role", "viewer", "--name", "dash", "-o", "json")
	var tok api.TokenCreated
	if code != 0 || json.Unmarshal([]byte(stdout), &tok) != nil || tok.Secret == "" || !strings.Contains(stderr, "only this once") {
		t.Fatalf("token create: exit %d\n%s\n%s", code, stdout, stderr)
	}
	out, code := runCLI(t, "token", "list")
	if code != 0 || !regexp.MustCompile(tok.ID+`\s+dash\s+viewer\s+all\s+.*active`).MatchString(out) {
		t.Errorf("token list: exit %d:\n%s", code, out)
	}
	// The viewer token works through the environment, then not after revoke.
	t.Setenv(EnvToken, tok.Secret)
	if out, code := runCLI(t, "status"); code != 0 {
		t.Errorf("status as viewer: exit %d: %s", code, out)
	}
	if out, code := runCLI(t, "token", "list"); code != ExitFailure || !strings.Contains(out, "ferry: ") {
		t.Errorf("viewer listing tokens: exit %d: %s", code, out)
	}
	t.Setenv(EnvToken, "")
	if out, code := runCLI(t, "token", "revoke", tok.ID); code != 0 || !strings.Contains(out, "Revoked token "+tok.ID) {
		t.Errorf("revoke: exit %d: %s", code, out)
	}
	t.Setenv(EnvToken, tok.Secret)
	out, code = runCLI(t, "status")
	if code != ExitFailure || !strings.Contains(out, "ferry: ") {
		t.Errorf("status with a revoked token: exit %d: %s", code, out)
	}
	c, err := loadClient(Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(t.Context(), ""); ferry.ErrorCode(err) != ferry.EUNAUTH {
		t.Errorf("revoked token: %v", err)
	}
}

// TestPlainHTTPRefused: a token never goes to a server over http:// unless
// the server is on this machine's loopback.
func TestPlainHTTPRefused(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, args := range [][]string{
		{"login", "http://10.1.2.3:7400", "--token", "fy_x"},
		{"agent", "--root", t.TempDir(), "--server", "http://deploy.example.com:7400", "--join", "fyj_x"},
	} {
		_, stderr, code := runCLIStreams(t, "", args...)
		if code != 2 || !strings.Contains(stderr, "http:// is allowed only to a loopback address") {
			t.Errorf("ferry %s: exit %d, %q; want 2 and why", strings.Join(args, " "), code, stderr)
		}
	}
}

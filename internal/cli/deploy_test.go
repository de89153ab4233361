package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/client/clienttest"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/server"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// checkGolden compares got with testdata/name; -update rewrites it.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cli -run %s -update creates it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./cli -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestParseBatch(t *testing.T) {
	for in, want := range map[string]string{"2": "2", " 25% ": "25%", "100%": "100%", "1": "1", "007": "7"} {
		if got, err := parseBatch(in); err != nil || got != want {
			t.Errorf("parseBatch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "0%", "101%", "1.5", "25 %x", "%", "two"} {
		if got, err := parseBatch(in); err == nil {
			t.Errorf("parseBatch(%q) = %q, want an error", in, got)
		}
	}
}

func TestParseRelease(t *testing.T) {
	for in, want := range map[string]int{"v12": 12, "V3": 3, "7": 7, " v1 ": 1} {
		if got, err := parseRelease(in); err != nil || got != want {
			t.Errorf("parseRelease(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	// vV1 was release 1 while each prefix was trimmed in turn.
	for _, in := range []string{"", "v", "v0", "v-1", "v+1", "vv1", "vV1", "v1.2", "latest", "v 1"} {
		if got, err := parseRelease(in); err == nil {
			t.Errorf("parseRelease(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseVersionArg(t *testing.T) {
	sum := strings.Repeat("0a", 32)
	for _, tc := range []struct{ in, version, sum string }{
		{"v1.4.0", "v1.4.0", ""},
		{"v1.4.0-3-gabc1234-dirty", "v1.4.0-3-gabc1234-dirty", ""},
		{sum, "", sum},
		{"sha256:" + strings.ToUpper(sum), "", sum},
		{sum[:12], sum[:12], ""}, // a short digest is a version: the server says if it is unknown
	} {
		v, s := parseVersionArg(tc.in)
		if v != tc.version || s != tc.sum {
			t.Errorf("parseVersionArg(%q) = %q, %q", tc.in, v, s)
		}
	}
}

func TestParseStrategy(t *testing.T) {
	for _, tc := range []struct {
		in     string
		canary int
		want   string
		ok     bool
	}{
		{"", 0, "", true},
		{"", 1, "canary", true},
		{"rolling", 0, "rolling", true},
		{"all", 0, "all", true},
		{"canary", 2, "canary", true},
		{"rolling", 1, "", false},
		{"blue-green", 0, "", false},
	} {
		got, err := parseStrategy(tc.in, tc.canary)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseStrategy(%q, %d) = %q, %v", tc.in, tc.canary, got, err)
		}
	}
}

func TestDeployUsage(t *testing.T) {
	isolateLogin(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy", "hello"}, "--to GROUP is required"},
		{[]string{"deploy", "hello", "--to", "prod", "--batch", "0"}, "--batch"},
		{[]string{"deploy", "hello", "--to", "prod", "--strategy", "fast"}, "use all, rolling or canary"},
		{[]string{"deploy", "hello", "v1", "--to", "prod", "--release", "v2"}, "not both"},
		{[]string{"rollback", "hello", "--to", "prod", "--release", "x"}, "not a release"},
		{[]string{"deploy", "hello", "--to", "prod", "--release", "v0"}, `--release: "v0" is not a release number: want v and a number from 1 up, like v12`},
		{[]string{"promote", "hello"}, "--to GROUP is required"},
		{[]string{"deploy", "hello", "--to", "prod", "-o", "yaml"}, "use text or json"},
	} {
		out, code := runCLI(t, tc.args...)
		if code != ExitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("ferry %v: exit %d, output %q; want 2 and %q", tc.args, code, out, tc.want)
		}
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testDeployment() api.Deployment {
	return api.Deployment{
		ID: "d-7f3a", App: "hello", Group: "prod", Release: 4, From: 3, Strategy: api.StrategyRolling, Batch: "50%",
		HealthTimeout: time.Minute, AutoRollback: true, State: api.DeployRunning, By: "alice", Started: t0,
		Hosts: map[string]api.HostRollout{
			"web-3": {Batch: 2, State: "pending"},
			"web-1": {Batch: 1, State: "healthy"},
			"web-2": {Batch: 1, State: "deploying"},
			"web-4": {Batch: 2, State: "pending"},
		},
	}
}

func TestRenderDeployment(t *testing.T) {
	running := testDeployment()
	failed := testDeployment()
	failed.State, failed.Error, failed.Ended = api.DeployFailed, "batch 1 failed its health checks", t0.Add(75*time.Second)
	failed.Hosts["web-2"] = api.HostRollout{Batch: 1, State: "failed", Error: "web.1: health http /healthz: 500 Internal Server Error\n(3 in a row)"}
	empty := testDeployment()
	empty.Hosts = nil
	var b bytes.Buffer
	for _, d := range []api.Deployment{running, failed, empty} {
		renderDeployment(&b, d, t0.Add(42*time.Second))
		b.WriteString("\n")
	}
	checkGolden(t, "deployment.txt", b.String())
}

func TestDeploymentChanges(t *testing.T) {
	var b bytes.Buffer
	titles, seen := map[string]string{}, map[string]api.HostRollout{}
	d := testDeployment()
	printDeploymentChanges(&b, d, titles, seen)
	printDeploymentChanges(&b, d, titles, seen) // nothing changed: nothing printed
	d.Hosts["web-2"] = api.HostRollout{Batch: 1, State: "healthy"}
	d.Hosts["web-3"] = api.HostRollout{Batch: 2, State: "deploying"}
	printDeploymentChanges(&b, d, titles, seen)
	d.State = api.DeploySucceeded
	printDeploymentChanges(&b, d, titles, seen)
	checkGolden(t, "deployment-lines.txt", b.String())
}

func TestDeployFailure(t *testing.T) {
	d := testDeployment()
	d.State, d.Error = api.DeployRolledBack, "web-2: v4: health http /healthz: 500"
	d.Hosts["web-2"] = api.HostRollout{Batch: 1, State: "failed", Error: "v4: health http /healthz: 500"}
	noAuto := d
	noAuto.State, noAuto.AutoRollback = api.DeployFailed, false
	first := d
	first.From = 0
	unnamed := d
	unnamed.Error = "" // the server gave no summary: the CLI names the hosts
	withOutput := d
	withOutput.Hosts = map[string]api.HostRollout{"web-1": d.Hosts["web-1"], "web-2": {Batch: 1, State: "failed", Error: "v4: post hook `npm ci` failed: exit status 1",
		Failure: &ferry.Failure{Kind: ferry.FailHook, Check: "post hook `npm ci`", Message: "exit status 1", Output: "npm ERR! code E404\nnpm ERR! 404 Not Found: left-pad@9.9.9"}}}
	for _, tc := range []struct {
		name string
		d    api.Deployment
		want string
	}{
		{"rolled back", d, "deploy hello v4 to prod (rolling, batch 50%, from v3) rolled-back: web-2: v4: health http /healthz: 500; rolled back to v3"},
		{"first release", first, "; rolled back: the touched hosts no longer run it"},
		{"no auto rollback", noAuto, "failed: web-2: v4: health http /healthz: 500; not rolled back (auto-rollback off): touched hosts keep v4 (ferry rollback hello --to prod)"},
		{"no summary from the server", unnamed, "rolled-back; failed on web-2 (v4: health http /healthz: 500); rolled back to v3"},
		{"the hook's last lines", withOutput, "; rolled back to v3\nweb-2: post hook `npm ci` printed:\n  npm ERR! code E404\n  npm ERR! 404 Not Found: left-pad@9.9.9"},
	} {
		if got := deployFailure(tc.d); !strings.Contains(got, tc.want) {
			t.Errorf("%s:\n got %s\nwant …%s…", tc.name, got, tc.want)
		}
	}
}

// fakeAgent plays a host's agent over the real API: it joins, follows its
// desired state with blocking queries and reports each app running and
// healthy, or failed with the error bad names for its sha256. It runs no
// processes: these tests are about the CLI and the server, not the agent.
func fakeAgent(t *testing.T, srv *server.Server, joinSecret, name string, bad map[string]string) {
	t.Helper()
	c := clienttest.Join(t, srv, joinSecret, name)
	ctx := t.Context()
	report := func(doc api.Desired) error {
		st := api.HostReport{Host: name, Apps: map[string]*api.AppStatus{}}
		for app, e := range doc.Doc.Apps {
			as := &api.AppStatus{Label: e.Release, SHA256: e.SHA256, State: agent.AppRunning,
				Processes: []api.ProcessStatus{{Process: "web", Instance: 1, State: supervise.StateRunning, Health: health.Healthy}}}
			if why, ok := bad[e.SHA256]; ok {
				as.State, as.Error, as.Processes = agent.AppFailed, "release "+e.Release+"-x: "+why, nil
			}
			st.Apps[app] = as
		}
		return c.Report(ctx, api.Report{State: st})
	}
	d, err := c.Desired(ctx, 0, 0)
	if err == nil {
		err = report(d)
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ctx.Err() == nil {
			next, err := c.Desired(ctx, d.Index, 5*time.Second)
			if err != nil {
				continue
			}
			if next.Index != d.Index {
				d = next
				report(d)
			}
		}
	}()
}

// waitUnlocked polls until the server holds no deploy lock.
func waitUnlocked(t *testing.T, c *client.Client) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		locks, err := c.Locks(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(locks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("locks still held: %+v", locks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func publish(t *testing.T, c *client.Client, app, version string) api.Artifact {
	t.Helper()
	a, err := c.UploadArtifact(t.Context(), clienttest.WriteArtifact(t, t.TempDir(), app, version, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDeployAgainstServer(t *testing.T) {
	srv := startServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	publish(t, c, "hello", "v1")
	v2 := publish(t, c, "hello", "v2")
	join := clienttest.JoinToken(t, c, "prod")
	bad := map[string]string{v2.SHA256: "health http /healthz: 500 Internal Server Error"}
	fakeAgent(t, srv, join, "web-1", bad)
	fakeAgent(t, srv, join, "web-2", bad)

	out, code := runCLI(t, "deploy", "hello", "v1", "--to", "prod", "--batch", "1")
	if code != 0 || !strings.Contains(out, "web-2  batch 1  healthy") || !strings.Contains(out, "every host runs v1 healthy") {
		t.Fatalf("deploy v1: exit %d:\n%s", code, out)
	}

	// A release that fails its health checks: exit 4, naming host and check.
	// (--wait-lock: the server may drop the last deployment's lock a moment
	// after it reports it over.)
	out, code = runCLI(t, "deploy", "hello", "v2", "--to", "prod", "--batch", "1", "--health-timeout", "30s", "--wait-lock", "30s")
	if code != ExitUnhealthy || !regexp.MustCompile(`ferry: deploy hello v2 to prod .*web-1: .*health http /healthz: 500 Internal Server Error.*; rolled back to v1\n`).MatchString(out) {
		t.Fatalf("deploy v2: exit %d:\n%s", code, out)
	}
	// The server records the outcome a moment after the deployment's end,
	// before it drops the lock.
	waitUnlocked(t, c)
	out, code = runCLI(t, "releases", "hello")
	if code != 0 || !regexp.MustCompile(`v2\s+v2\s+\w+\s+-\s+admin\s+.*rolled-back\s+-`).MatchString(out) ||
		!regexp.MustCompile(`v1\s+v1\s+.*healthy\s+prod`).MatchString(out) {
		t.Errorf("releases: exit %d:\n%s", code, out)
	}

	// Canary, then promote.
	publish(t, c, "hello", "v3")
	out, code = runCLI(t, "deploy", "hello", "v3", "--to", "prod", "--canary", "1", "--wait-lock", "30s")
	if code != 0 || !strings.Contains(out, "continue with: ferry promote hello --to prod") {
		t.Fatalf("canary: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, "promote", "hello", "--to", "prod", "-o", "json")
	var d api.Deployment
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || d.State != api.DeploySucceeded || d.Release != 3 {
		t.Fatalf("promote: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "promote", "hello", "--to", "prod"); code != ExitFailure || !strings.Contains(out, "waits for promote") {
		t.Errorf("promote with nothing waiting: exit %d: %s", code, out)
	}

	waitUnlocked(t, c) // a rollback has no --wait-lock
	out, code = runCLI(t, "rollback", "hello", "--to", "prod", "--release", "v1")
	if code != 0 || !strings.Contains(out, "rollback of hello in prod to v1 (rolling, batch 25%, from v3): every host runs v1 healthy") {
		t.Errorf("rollback: exit %d:\n%s", code, out)
	}

	// --detach returns the id of a deployment the server carries on.
	stdout, _, code := runCLIStreams(t, "", "deploy", "hello", "v3", "--to", "prod", "--detach", "--wait-lock", "30s")
	id := strings.TrimSpace(stdout)
	if code != 0 || id == "" || strings.Contains(id, "\n") {
		t.Fatalf("detach: exit %d: %q", code, stdout)
	}
	if _, _, err := c.Deployment(t.Context(), id, 0, 0); err != nil {
		t.Errorf("the detached deployment: %v", err)
	}
}

func TestDeployLockedAndDenied(t *testing.T) {
	srv := startServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	publish(t, c, "hello", "v1")
	// A host that joined but never reports keeps a rollout, and its lock, alive.
	clienttest.Join(t, srv, clienttest.JoinToken(t, c, "prod"), "web-9")
	if out, code := runCLI(t, "deploy", "hello", "--to", "prod", "--detach", "--health-timeout", "5m"); code != 0 {
		t.Fatalf("deploy: exit %d: %s", code, out)
	}
	out, code := runCLI(t, "deploy", "hello", "--to", "prod")
	if code != ExitLocked || !strings.Contains(out, "ferry: ") {
		t.Errorf("second deploy: exit %d, want 3: %s", code, out)
	}
	out, code = runCLI(t, "lock", "status", "hello", "--to", "prod")
	if code != 0 || !regexp.MustCompile(`hello\s+prod\s+admin\s+deploy v1`).MatchString(out) {
		t.Errorf("lock status: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "lock", "status", "other"); code != 0 || !strings.Contains(out, "no deploy locks held") {
		t.Errorf("lock status other: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "lock", "release", "hello", "--to", "prod"); code != 0 {
		t.Errorf("lock release: exit %d: %s", code, out)
	}
	out, code = runCLI(t, "lock", "status", "-o", "json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("lock status after release: exit %d: %s", code, out)
	}

	// A deployer scoped to another app: 403, exit 1 with the server's reason.
	tok, err := c.CreateToken(t.Context(), api.TokenRequest{Name: "ci-other", Role: api.RoleDeployer, Apps: []string{"other"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvToken, tok.Secret)
	out, code = runCLI(t, "deploy", "hello", "--to", "prod")
	if code != ExitFailure || !strings.Contains(out, "ferry: ") || !strings.Contains(out, "hello") {
		t.Errorf("scoped deployer: exit %d: %s", code, out)
	}
	c2, _ := loadClient(Env{})
	_, err = c2.Deploy(t.Context(), api.DeployRequest{App: "hello", Group: "prod"})
	if ferry.ErrorCode(err) != ferry.EDENIED || ExitCode(t.Context(), err) != ExitFailure {
		t.Errorf("scoped deployer: %v (%s)", err, ferry.ErrorCode(err))
	}
}

// Ctrl-C while watching leaves the rollout running on the server, says so,
// and exits 130.
func TestWatchInterrupted(t *testing.T) {
	srv := startServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	publish(t, c, "hello", "v1")
	clienttest.Join(t, srv, clienttest.JoinToken(t, c, "prod"), "web-9")
	d, err := c.Deploy(t.Context(), api.DeployRequest{App: "hello", Group: "prod", HealthTimeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	w := newDeployWatcher(Env{Stdout: &out, Stderr: &errOut}, c, "text")
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err = w.watch(ctx, d)
	if code := ExitCode(ctx, err); code != ExitInterrupted {
		t.Errorf("exit %d (%v), want 130", code, err)
	}
	if !strings.Contains(errOut.String(), "stopped watching; deployment "+d.ID+" continues on the server") {
		t.Errorf("stderr: %q", errOut.String())
	}
	cur, _, err := c.Deployment(t.Context(), d.ID, 0, 0)
	if err != nil || cur.State != api.DeployRunning {
		t.Errorf("after Ctrl-C the deployment is %q, %v; want it still running", cur.State, err)
	}
}

// On a terminal the table is redrawn in place: cursor up over the last
// drawing, clear, draw.
func TestWatchRedrawsOnTerminal(t *testing.T) {
	var out bytes.Buffer
	w := newDeployWatcher(Env{Stdout: &out}, nil, "text")
	w.tty, w.now = true, func() time.Time { return t0.Add(time.Second) }
	d := testDeployment()
	w.show(d)
	first := out.String()
	d.Hosts["web-2"] = api.HostRollout{Batch: 1, State: "healthy"}
	w.show(d)
	lines := strings.Count(first, "\n")
	if lines != 6 || !strings.HasPrefix(out.String()[len(first):], fmt.Sprintf("\x1b[%dA\x1b[J", lines)) {
		t.Errorf("redraw: %q", out.String())
	}
}

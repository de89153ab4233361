package integration

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestFleet is issue 5's end-to-end test: a real `ferry server`, real
// agents joined to group prod (each in its own network namespace when this
// machine can make them, else on the host's loopback), and every step
// driven through the CLI as an operator would: login, join tokens,
// publish, rolling and canary deploys, a bad release rolled back
// automatically, deploy locks and --wait-lock, promote, rollback, scoped
// and revoked tokens, an agent killed mid-deploy, an agent that never
// comes back, a host that joins later, status, releases and history.
//
// The app is examples/hello without a public port: each instance gets a
// free $PORT from its agent, so agents sharing one loopback do not collide.
func TestFleet(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl") // the app's health check: hello has no port of its own to give an http check
	start := time.Now()
	defer func() { t.Logf("TestFleet took %s", time.Since(start).Round(100*time.Millisecond)) }()

	// The CLI's login goes to a config of this test's own.
	cfgHome := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfgHome)
	for _, k := range []string{"FERRY_SERVER", "FERRY_TOKEN", "FERRY_CA_SHA256"} {
		t.Setenv(k, "")
	}
	const group = "prod"
	deployFlags := []string{"--to", group, "--health-timeout", "10s"}

	// Artifacts: hello 1.0.0, 1.2.0 and 1.3.0; 1.1.0 is a build whose
	// process exits 1 at once.
	good, bad := t.TempDir(), t.TempDir()
	buildHelloBin(t, goBin, good)
	yaml := fleetYAML("", "")
	os.WriteFile(filepath.Join(good, "ferry.yaml"), []byte(yaml), 0o644)
	os.WriteFile(filepath.Join(bad, "ferry.yaml"), []byte(yaml), 0o644)
	os.MkdirAll(filepath.Join(bad, "bin"), 0o755)
	os.WriteFile(filepath.Join(bad, "bin", "hello"), []byte("#!/bin/sh\necho 'hello 1.1.0: cannot start' >&2\nexit 1\n"), 0o755)
	arts := map[string]string{}
	for _, v := range []string{"1.0.0", "1.2.0", "1.3.0"} {
		arts[v], _ = buildDir(t, good, v)
	}
	arts["1.1.0"], _ = buildDir(t, bad, "1.1.0")

	fn := newFleetNet(t, 4)
	srv := startFleetServer(t, fn.serverIP, "--host-lost-after", "15s")

	cli := func(t *testing.T, env []string, args ...string) result {
		t.Helper()
		r, err := fleetRun(context.Background(), env, args...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// must runs a command that has to exit with code.
	must := func(t *testing.T, code int, args ...string) result {
		t.Helper()
		r := cli(t, nil, args...)
		if r.code != code {
			t.Fatalf("ferry %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
		}
		return r
	}
	status := func(t *testing.T) fleetStatus {
		t.Helper()
		r := must(t, 0, "status", "-o", "json")
		var st fleetStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, r.stdout)
		}
		return st
	}
	waitStatus := func(t *testing.T, what string, within time.Duration, cond func(fleetStatus) bool) fleetStatus {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			st := status(t)
			if cond(st) {
				return st
			}
			if time.Now().After(deadline) {
				var b strings.Builder
				for _, h := range st.Hosts {
					fmt.Fprintf(&b, "  %s\n", h.String())
				}
				t.Fatalf("%s: not within %s; ferry status says:\n%s", what, within, b.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// on says whether each named host runs hello at label, healthy.
	on := func(label string, hosts ...string) func(fleetStatus) bool {
		return func(st fleetStatus) bool {
			for _, h := range hosts {
				if !st.host(h).runs("hello", label) {
					return false
				}
			}
			return true
		}
	}
	releases := func(t *testing.T) map[int]fleetRelease {
		t.Helper()
		r := must(t, 0, "releases", "hello", "-o", "json")
		var rs []fleetRelease
		if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil {
			t.Fatalf("releases -o json: %v\n%s", err, r.stdout)
		}
		m := map[int]fleetRelease{}
		for _, rel := range rs {
			m[rel.Number] = rel
		}
		return m
	}
	// The sequence is one story: a step that fails leaves nothing for
	// the next ones to check.
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	top := t // agents live as long as the whole test, and log when it failed
	var join string
	agents := make([]*fleetAgent, 4)
	three := []string{"web-1", "web-2", "web-3"}

	step("server files", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(srv.data, "admin.token"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("DATA/admin.token: %v %v, want mode 0600", fi, err)
		}
		b, err := os.ReadFile(filepath.Join(srv.data, "tls", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || fmt.Sprintf("%x", sha256.Sum256(blk.Bytes)) != srv.ca {
			t.Errorf("the CA pin the server printed, %s, is not the sha256 of tls/ca.crt's DER bytes", srv.ca)
		}
	})

	step("login", func(t *testing.T) {
		// Without a login the CLI says how to get one.
		r := must(t, 1, "status")
		if !strings.Contains(r.stderr, "ferry login") {
			t.Errorf("status before login: %s", r.stderr)
		}
		// The environment alone will do, as in CI.
		r = cli(t, []string{"FERRY_SERVER=" + srv.url, "FERRY_TOKEN=" + srv.token, "FERRY_CA_SHA256=" + srv.ca}, "status")
		if r.code != 0 || !strings.Contains(r.stdout, "no hosts have joined") {
			t.Errorf("status with FERRY_SERVER, FERRY_TOKEN and FERRY_CA_SHA256: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		// The admin token's id with another secret.
		wrong := srv.token[:len(srv.token)-4] + "0000"
		if wrong == srv.token {
			wrong = srv.token[:len(srv.token)-4] + "1111"
		}
		r = must(t, 1, "login", srv.url, "--token", wrong, "--ca-sha256", srv.ca)
		if !strings.Contains(r.stderr, "invalid token") {
			t.Errorf("login with a wrong token: %s", r.stderr)
		}
		if _, err := os.Stat(filepath.Join(cfgHome, "ferry", "config.json")); err == nil {
			t.Errorf("a failed login saved its token")
		}
		must(t, 0, "login", srv.url, "--token", srv.token, "--ca-sha256", srv.ca)
		fi, err := os.Stat(filepath.Join(cfgHome, "ferry", "config.json"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("login saved no 0600 config in $XDG_CONFIG_HOME: %v %v", fi, err)
		}
		// No token at all: 401 (the CLI refuses to send none).
		if code := fleetHTTP(t, srv, "", http.MethodGet, "/v1/status", ""); code != http.StatusUnauthorized {
			t.Errorf("GET /v1/status without a token: %d, want 401", code)
		}
	})

	step("agents join", func(t *testing.T) {
		r := must(t, 0, "agent", "join-token", "--group", group, "-o", "json")
		var tok struct{ Secret, Command string }
		if err := json.Unmarshal([]byte(r.stdout), &tok); err != nil || tok.Secret == "" {
			t.Fatalf("join-token -o json: %v\n%s", err, r.stdout)
		}
		join = tok.Secret
		if !strings.HasPrefix(tok.Command, "FERRY_JOIN_TOKEN="+join+" ") || strings.Contains(tok.Command, "--join") || !strings.Contains(tok.Command, "--ca-sha256 "+srv.ca) {
			t.Errorf("join-token's command %q lacks the token in the environment or the CA pin", tok.Command)
		}
		for i := range 3 {
			agents[i] = startFleetAgent(top, fn, i, srv, join)
		}
		// A host is in the group once its join request is answered; its
		// agent then keeps its credential.
		st := waitStatus(t, "three hosts in prod, their credentials kept", 20*time.Second, func(st fleetStatus) bool {
			for i, h := range three {
				if hs := st.host(h); hs == nil || !slices.Contains(hs.Groups, group) || hs.Lost {
					return false
				}
				if _, err := os.Stat(filepath.Join(agents[i].root, "credential.json")); err != nil {
					return false
				}
			}
			return true
		})
		if len(st.Hosts) != 3 {
			t.Errorf("ferry status shows %d hosts, want 3", len(st.Hosts))
		}
		// The join token is in no agent's command line, which any local
		// user reads, and in no environment the agent passes on.
		for _, a := range agents[:3] {
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", a.cmd.Process.Pid)); err != nil || strings.Contains(string(cmdline), join) || !strings.Contains(string(cmdline), "agent") {
				t.Errorf("%s's command line holds the join token (or could not be read: %v): %q", a.name, err, cmdline)
			}
		}
	})

	step("publish", func(t *testing.T) {
		r := must(t, 0, "publish", arts["1.0.0"])
		if !strings.Contains(r.stdout, "hello 1.0.0 published") {
			t.Errorf("first publish:\n%s", r.stdout)
		}
		r = must(t, 0, "publish", arts["1.0.0"])
		if !strings.Contains(r.stdout, "already on the server") {
			t.Errorf("second publish of the same artifact:\n%s", r.stdout)
		}
		for _, v := range []string{"1.1.0", "1.2.0", "1.3.0"} {
			must(t, 0, "publish", arts[v])
		}
	})

	step("deploy v1 rolling", func(t *testing.T) {
		r := must(t, 0, append([]string{"deploy", "hello", "1.0.0", "--strategy", "rolling", "--batch", "1"}, deployFlags...)...)
		for i, h := range three {
			if !strings.Contains(r.stdout, fmt.Sprintf("%s  batch %d", h, i)) {
				t.Errorf("deploy output shows no batch %d for %s:\n%s", i, h, r.stdout)
			}
		}
		if !strings.Contains(r.stdout, "every host runs v1 healthy") {
			t.Errorf("deploy output:\n%s", r.stdout)
		}
		// No waiting: the deployment ends only when every host reported.
		st := status(t)
		if !on("v1", three...)(st) {
			t.Fatalf("after deploy v1: %+v", st)
		}
	})

	step("bad release rolls back", func(t *testing.T) {
		r := must(t, 4, append([]string{"deploy", "hello", "1.1.0", "--batch", "1"}, deployFlags...)...)
		// Rolling, batch 1: web-1 fails first and the rollout stops there.
		if !strings.Contains(r.stderr, "web-1") || !strings.Contains(r.stderr, "v2") || !strings.Contains(r.stderr, "rolled back to v1") {
			t.Errorf("the failure names no host, release or rollback:\n%s", r.stderr)
		}
		if !strings.Contains(r.stderr, "web.1 is crash-looping: exited with code 1") {
			t.Errorf("the failure does not say what failed (the process exits 1):\n%s", r.stderr)
		}
		if !on("v1", three...)(status(t)) {
			t.Errorf("after the rollback not every host runs v1: %+v", status(t))
		}
		rs := releases(t)
		if rs[1].Outcome != "healthy" || rs[2].Outcome != "rolled-back" || rs[2].Version != "1.1.0" {
			t.Errorf("releases: v1 %+v, v2 %+v", rs[1], rs[2])
		}
		table := must(t, 0, "releases", "hello").stdout
		if !strings.Contains(table, "rolled-back") || !strings.Contains(table, "healthy") || !strings.Contains(table, "OUTCOME") {
			t.Errorf("ferry releases:\n%s", table)
		}
	})

	step("lock, wait-lock, promote", func(t *testing.T) {
		r := must(t, 0, append([]string{"deploy", "hello", "1.2.0", "--canary", "1"}, deployFlags...)...)
		if !strings.Contains(r.stdout, "ferry promote hello --to prod") {
			t.Errorf("canary output:\n%s", r.stdout)
		}
		st := status(t)
		if !on("v3", "web-1")(st) || !on("v1", "web-2", "web-3")(st) {
			t.Fatalf("canary: want web-1 on v3, the others on v1: %+v", st)
		}
		// The waiting canary holds the lock.
		r = must(t, 0, "lock", "status", "hello", "--to", group, "-o", "json")
		var locks []struct{ App, Group, Owner, Reason string }
		json.Unmarshal([]byte(r.stdout), &locks)
		if len(locks) != 1 || locks[0].Owner == "" || !strings.Contains(locks[0].Reason, "v3") {
			t.Errorf("lock status -o json: %s", r.stdout)
		}
		r = must(t, 3, append([]string{"deploy", "hello", "1.3.0"}, deployFlags...)...)
		if !strings.Contains(r.stderr, "locked by "+locks[0].Owner+" since ") || !strings.Contains(r.stderr, "v3") {
			t.Errorf("locked deploy:\n%s", r.stderr)
		}

		type done struct {
			r   result
			err error
		}
		waiter := make(chan done, 1)
		go func() {
			r, err := fleetRun(context.Background(), nil, append([]string{"deploy", "hello", "1.3.0", "--wait-lock", "60s", "--batch", "2"}, deployFlags...)...)
			waiter <- done{r, err}
		}()
		// It must wait for the lock rather than exit 3 at once.
		select {
		case d := <-waiter:
			t.Fatalf("deploy --wait-lock did not wait: exit %d\n%s%s", d.r.code, d.r.stdout, d.r.stderr)
		case <-time.After(1500 * time.Millisecond):
		}
		r = must(t, 0, "promote", "hello", "--to", group)
		if !strings.Contains(r.stdout, "every host runs v3 healthy") {
			t.Errorf("promote output:\n%s", r.stdout)
		}
		var d done
		select {
		case d = <-waiter:
		case <-time.After(60 * time.Second):
			t.Fatal("deploy --wait-lock still runs 60s after the lock was free")
		}
		if d.err != nil || d.r.code != 0 {
			t.Fatalf("deploy --wait-lock: exit %d %v\n%s%s", d.r.code, d.err, d.r.stdout, d.r.stderr)
		}
		if !strings.Contains(d.r.stdout, "every host runs v4 healthy") {
			t.Errorf("deploy --wait-lock output:\n%s", d.r.stdout)
		}
		if !on("v4", three...)(status(t)) {
			t.Errorf("after deploy --wait-lock: %+v", status(t))
		}
		if r := must(t, 0, "lock", "status"); !strings.Contains(r.stdout, "no deploy locks held") {
			t.Errorf("a lock outlived its deployment:\n%s", r.stdout)
		}
	})

	step("rollback", func(t *testing.T) {
		// v4 runs; the last release healthy on every host before it is v3.
		r := must(t, 0, "rollback", "hello", "--to", group)
		if !strings.Contains(r.stdout, "every host runs v3 healthy") {
			t.Errorf("rollback output:\n%s", r.stdout)
		}
		if !on("v3", three...)(status(t)) {
			t.Errorf("after rollback: %+v", status(t))
		}
	})

	step("tokens", func(t *testing.T) {
		r := must(t, 0, "token", "create", "--role", "deployer", "--apps", "other", "--name", "ci-other", "-o", "json")
		var tok struct{ ID, Secret string }
		if err := json.Unmarshal([]byte(r.stdout), &tok); err != nil || tok.Secret == "" {
			t.Fatalf("token create -o json: %v\n%s", err, r.stdout)
		}
		as := []string{"FERRY_TOKEN=" + tok.Secret}
		r = cli(t, as, append([]string{"deploy", "hello", "1.0.0"}, deployFlags...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "may not touch app hello") {
			t.Errorf("deployer of app other deploying hello: exit %d, want 1 and why\n%s", r.code, r.stderr)
		}
		if code := fleetHTTP(t, srv, tok.Secret, http.MethodPost, "/v1/deployments", `{"app":"hello","group":"prod"}`); code != http.StatusForbidden {
			t.Errorf("POST /v1/deployments of hello with a token for app other: %d, want 403", code)
		}
		must(t, 0, "token", "revoke", tok.ID)
		r = cli(t, as, "status")
		if r.code != 1 || !strings.Contains(r.stderr, "token ci-other was revoked") {
			t.Errorf("revoked token: exit %d, want 1 and revoked\n%s", r.code, r.stderr)
		}
		if code := fleetHTTP(t, srv, tok.Secret, http.MethodGet, "/v1/status", ""); code != http.StatusUnauthorized {
			t.Errorf("GET /v1/status with a revoked token: %d, want 401", code)
		}
		r = must(t, 0, "token", "list", "-o", "json")
		var toks []struct {
			ID      string
			Revoked bool
		}
		json.Unmarshal([]byte(r.stdout), &toks)
		if i := slices.IndexFunc(toks, func(x struct {
			ID      string
			Revoked bool
		}) bool {
			return x.ID == tok.ID
		}); i < 0 || !toks[i].Revoked {
			t.Errorf("token list does not show %s revoked:\n%s", tok.ID, r.stdout)
		}
		// An agent's credential reads only its own desired state.
		b, err := os.ReadFile(filepath.Join(agents[0].root, "credential.json"))
		if err != nil {
			t.Fatal(err)
		}
		var cred struct{ Secret string }
		json.Unmarshal(b, &cred)
		r = cli(t, []string{"FERRY_TOKEN=" + cred.Secret}, "status")
		if r.code != 1 || !strings.Contains(r.stderr, "role agent") {
			t.Errorf("an agent credential reading the status: exit %d, want 1 and why\n%s", r.code, r.stderr)
		}
		if code := fleetHTTP(t, srv, cred.Secret, http.MethodGet, "/v1/status", ""); code != http.StatusForbidden {
			t.Errorf("GET /v1/status with an agent credential: %d, want 403", code)
		}
	})

	step("a host joins later", func(t *testing.T) {
		agents[3] = startFleetAgent(top, fn, 3, srv, join)
		waitStatus(t, "web-4 converges to the group's v3", 20*time.Second, on("v3", "web-4"))
	})

	step("config and a secret", func(t *testing.T) {
		const secret = "fleet-s3cret-value"
		if r := ferry(t, "", []byte(secret+"\n"), "config", "set", "hello", "--group", group, "--secret", "API_KEY=-"); r.code != 0 {
			t.Fatalf("config set --secret: exit %d\n%s", r.code, r.stderr)
		}
		r := must(t, 0, "config", "set", "hello", "--group", group, "LOG_LEVEL=debug", "--deploy")
		if !strings.Contains(r.stdout, "healthy") {
			t.Fatalf("config set --deploy:\n%s", r.stdout)
		}
		st := status(t)
		for i, h := range three {
			rel := st.host(h).Apps["hello"].Release
			envFile := filepath.Join(agents[i].root, "apps", "hello", "env", rel)
			b, err := os.ReadFile(envFile)
			fi, _ := os.Stat(envFile)
			if err != nil || !strings.Contains(string(b), `API_KEY='`+secret+`'`) || !strings.Contains(string(b), `LOG_LEVEL='debug'`) || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: env file %s (%v): %q; want the config, mode 0600", h, envFile, err, b)
			}
			if fi, err := os.Stat(filepath.Join(agents[i].root, "state.json")); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: state.json %v; want mode 0600", h, err)
			}
			log, _ := os.ReadFile(agents[i].log.Name())
			if strings.Contains(string(log), secret) {
				t.Errorf("%s's agent log holds the secret", h)
			}
		}
		for _, args := range [][]string{{"status", "-o", "json"}, {"config", "list", "hello", "--group", group}, {"history", "-n", "0", "-o", "json"}, {"releases", "hello", "-o", "json"}} {
			if r := must(t, 0, args...); strings.Contains(r.stdout, secret) {
				t.Errorf("ferry %s shows the secret", strings.Join(args, " "))
			}
		}
		if b, _ := os.ReadFile(srv.log); strings.Contains(string(b), secret) {
			t.Error("the server's log holds the secret")
		}
	})

	all := []string{"web-1", "web-2", "web-3", "web-4"}
	step("agent killed mid-deploy", func(t *testing.T) {
		type done struct {
			r   result
			err error
		}
		deployer := make(chan done, 1)
		go func() {
			r, err := fleetRun(context.Background(), nil, "deploy", "hello", "--release", "v4", "--batch", "1", "--to", group, "--health-timeout", "20s")
			deployer <- done{r, err}
		}()
		// web-2 is in the second batch: kill its agent as the first one
		// is done, while web-2 installs and starts v4.
		waitStatus(t, "web-1 on v4", 20*time.Second, on("v4", "web-1"))
		web2 := agents[1]
		web2.kill()
		r := must(t, 0, "agent", "status", "--root", web2.root)
		if !strings.Contains(r.stderr, "no agent answers") {
			t.Errorf("agent status without the agent:\n%s", r.stderr)
		}
		web2.start()
		var d done
		select {
		case d = <-deployer:
		case <-time.After(60 * time.Second):
			t.Fatal("the deployment did not end within 60s of the agent's restart")
		}
		if d.err != nil || d.r.code != 0 {
			t.Fatalf("deploy with web-2's agent killed and restarted: exit %d %v\n%s%s", d.r.code, d.err, d.r.stdout, d.r.stderr)
		}
		st := status(t)
		if !on("v4", all...)(st) {
			t.Fatalf("after the deploy: %+v", st)
		}
		// The truth: one hello process under web-2's root, the one the
		// server and the agent report.
		pids := pidsUnder(web2.root, "hello")
		app := st.host("web-2").Apps["hello"]
		if len(pids) != 1 || len(app.Processes) != 1 || app.Processes[0].PID != pids[0] {
			t.Errorf("web-2 runs %v under its root; the server reports %+v", pids, app.Processes)
		}
	})

	step("agent never comes back", func(t *testing.T) {
		web3 := agents[2]
		web3.kill()
		began := time.Now()
		r := must(t, 4, "deploy", "hello", "--release", "v3", "--batch", "1", "--to", group, "--health-timeout", "3s")
		took := time.Since(began)
		t.Logf("the deploy failed after %s:\n%s", took.Round(100*time.Millisecond), r.stderr)
		// Rolling web-3 back cannot be confirmed either: its agent is
		// dead, and its last report does not count for a newer request.
		// Its last report predates the deploy, so it judges nothing: the
		// failure says no report came.
		if !strings.Contains(r.stderr, "web-3: release v3 not confirmed within 3s: no report since") || !strings.Contains(r.stderr, "rolling back failed: web-3") {
			t.Errorf("the failure does not name web-3, its timeout and the unconfirmed rollback:\n%s", r.stderr)
		}
		// One timeout for the deploy, one for rolling web-3 back: not a
		// hang.
		if took > 20*time.Second {
			t.Errorf("the deploy took %s to fail with a 3s health timeout", took)
		}
		st := status(t)
		if !on("v4", "web-1", "web-2", "web-4")(st) {
			t.Errorf("the live hosts are not back on v4: %+v", st)
		}
		// Its heartbeats stopped: after --host-lost-after the host is lost.
		waitStatus(t, "web-3 lost", 25*time.Second, func(st fleetStatus) bool { return st.host("web-3").Lost })
		if r := must(t, 0, "status", "hello"); !strings.Contains(r.stdout, "LOST") {
			t.Errorf("ferry status does not mark web-3 LOST:\n%s", r.stdout)
		}
	})

	step("history", func(t *testing.T) {
		r := must(t, 0, "history", "-n", "0", "-o", "json")
		var evs []fleetEvent
		if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil {
			t.Fatalf("history -o json: %v\n%s", err, r.stdout)
		}
		count := map[string]int{}
		for _, e := range evs {
			count[e.Action]++
			if e.Action == "deploy" && (e.Who == "" || e.From == "") {
				t.Errorf("deploy event without who or where from: %+v", e)
			}
		}
		for action, want := range map[string]int{
			"publish": 4, "join-token.create": 1, "host.join": 4, "deploy": 6, "promote": 1, "rollback": 1,
			// The crash-looping release was rolled back; the deploy to a dead
			// host failed, its rollback unconfirmable.
			"token.create": 2, "token.revoke": 1, "deployment.succeeded": 5, "deployment.rolled-back": 1, "deployment.failed": 1,
		} {
			if count[action] < want {
				t.Errorf("history has %d %s events, want at least %d", count[action], action, want)
			}
		}
		if t.Failed() {
			t.Logf("history:\n%s", must(t, 0, "history", "-n", "0").stdout)
		}
	})
}

// fleetHTTP makes one API request with token ("": none) and returns the
// status code: the CLI shows the server's message, not its status.
func fleetHTTP(t *testing.T, s *fleetServer, token, method, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := fleetHTTPClient(t, s).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// apiGet GETs path from s with its admin token and decodes the JSON answer
// into v, for what the CLI does not show.
func apiGet(hc *http.Client, s *fleetServer, path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, s.url+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// fleetHTTPClient trusts the server's CA, for requests the CLI cannot make.
func fleetHTTPClient(t *testing.T, s *fleetServer) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(s.data, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("tls/ca.crt holds no certificate")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// pidsUnder lists the processes named comm whose working directory is
// below dir (health checks run there too).
func pidsUnder(dir, comm string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && strings.HasPrefix(cwd, dir+"/") {
			// Not a zombie, which a restart may leave for a moment.
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err == nil && strings.HasPrefix(string(b), fmt.Sprintf("%d (%s) ", pid, comm)) && !strings.Contains(string(b), ") Z ") {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

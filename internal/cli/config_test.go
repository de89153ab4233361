package cli

import (
	"regexp"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/client/clienttest"
)

// TestConfigCommands drives ferry config against a real server: set (a
// secret from stdin, values from a .env file), list, get, history, diff,
// unset, and a config-only deploy with set --deploy.
func TestConfigCommands(t *testing.T) {
	srv := startServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	publish(t, c, "hello", "v1")
	fakeAgent(t, srv, clienttest.JoinToken(t, c, "prod"), "web-1", nil)
	if out, code := runCLI(t, "deploy", "hello", "v1", "--to", "prod"); code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}

	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{".env": "LOG_LEVEL=info\nREGION=eu\n"})
	envFile := dir + "/.env"
	steps := []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"config", "set", "hello", "--from-file", envFile}, "config r1 of hello app-wide: set LOG_LEVEL, REGION"},
		{"", []string{"config", "set", "hello", "--group", "prod", "LOG_LEVEL=warn"}, "config r2 of hello in prod: set LOG_LEVEL"},
		{"hunter2\n", []string{"config", "set", "hello", "--group", "prod", "--secret", "API_KEY=-"}, "config r3 of hello in prod: set secret API_KEY"},
		{"", []string{"config", "get", "hello", "LOG_LEVEL", "--group", "prod"}, "warn\n"},
		{"", []string{"config", "get", "hello", "API_KEY", "--group", "prod"}, "••••\n"},
		{"", []string{"config", "get", "hello", "LOG_LEVEL"}, "info\n"},
		{"", []string{"config", "diff", "hello", "r1", "rev3"}, "+ API_KEY=•••• (prod)\n+ LOG_LEVEL=warn (prod)\n"},
		{"", []string{"config", "unset", "hello", "--group", "prod", "LOG_LEVEL"}, "config r4 of hello in prod: unset LOG_LEVEL"},
		{"", []string{"config", "set", "hello", "--group", "prod", "FEATURE=on", "--deploy"}, "every host runs v2 healthy"},
	}
	for _, s := range steps {
		stdout, stderr, code := runCLIStreams(t, s.stdin, s.args...)
		if code != 0 || !strings.Contains(stdout+stderr, s.want) {
			t.Fatalf("ferry %s: exit %d\n%s%s\nwant %q", strings.Join(s.args, " "), code, stdout, stderr, s.want)
		}
		if strings.Contains(stdout+stderr, "hunter2") {
			t.Fatalf("ferry %s printed the secret", strings.Join(s.args, " "))
		}
	}
	out, code := runCLI(t, "config", "list", "hello", "--group", "prod")
	if code != 0 || !regexpMatch(`API_KEY\s+••••\s+prod`, out) || !regexpMatch(`LOG_LEVEL\s+info\s+app`, out) || !regexpMatch(`FEATURE\s+on\s+prod`, out) {
		t.Errorf("config list --group prod: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "config", "history", "hello")
	if code != 0 || !regexpMatch(`r5\s+in prod\s+set FEATURE`, out) || !regexpMatch(`r3\s+in prod\s+set secret API_KEY`, out) {
		t.Errorf("config history: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "releases", "hello")
	if code != 0 || !regexpMatch(`v2\s+v1\s+\w+\s+r5`, out) {
		t.Errorf("releases after a config deploy: exit %d\n%s", code, out)
	}
	for _, bad := range [][]string{
		{"config", "set", "hello", "NOEQUALS"},
		{"config", "set", "hello", "X=1", "--deploy"},
		{"config", "diff", "hello", "r1", "latest"},
	} {
		if out, code := runCLI(t, bad...); code != ExitUsage {
			t.Errorf("ferry %s: exit %d, want 2\n%s", strings.Join(bad, " "), code, out)
		}
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

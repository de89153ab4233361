package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

func TestPrintTokens(t *testing.T) {
	ts := []api.Token{
		{ID: "tok_1", Name: "admin", Role: api.RoleAdmin, Created: t0.Add(-48 * time.Hour)},
		{ID: "tok_2", Name: "ci-hello", Role: api.RoleDeployer, Apps: []string{"hello", "api"}, Groups: []string{"staging"}, Created: t0, Expires: t0.Add(720 * time.Hour)},
		{ID: "tok_3", Role: api.RoleViewer, Created: t0.Add(-48 * time.Hour), Expires: t0.Add(-time.Hour)},
		{ID: "tok_4", Name: "bob", Role: api.RoleDeployer, Groups: []string{"prod"}, Created: t0, Revoked: true},
		{ID: "agt_1", Role: api.RoleAgent, Host: "web-1", Created: t0},
	}
	var b bytes.Buffer
	printTokens(&b, ts, t0)
	printTokens(&b, nil, t0)
	checkGolden(t, "tokens.txt", b.String())
}

func TestTokenUsage(t *testing.T) {
	isolateLogin(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create"}, "--role is required"},
		{[]string{"token", "create", "--role", "viewer"}, "--name is required"},
		{[]string{"token", "create", "--role", "root"}, "use viewer, deployer or admin"},
		{[]string{"token", "revoke"}, "accepts 1 arg"},
		{[]string{"token", "frobnicate"}, "unknown command"},
		{[]string{"deploi"}, "unknown command"},
		{[]string{"agent", "join-token"}, "--group is required"},
		{[]string{"lock", "release", "hello"}, "--to GROUP is required"},
		{[]string{"lock", "stauts"}, "unknown command"},
	} {
		out, code := runCLI(t, tc.args...)
		if code != ExitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("ferry %v: exit %d, output %q; want 2 and %q", tc.args, code, out, tc.want)
		}
	}
}

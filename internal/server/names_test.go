package server

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/artifact"
)

// TestNamesByFerrysRules: the server checks names and digests by the rules
// of package ferry, the ones ferry.yaml and the agent's desired state are
// checked by, so it refuses an app no agent could run (its desired state
// would fail to parse on every host of the group), and says what is wrong.
func TestNamesByFerrysRules(t *testing.T) {
	ts := startServer(t, t.TempDir())
	// A machine's dotted name is a host name; dots go in group names too.
	ts.join("web-1.example.com", "eu.prod")
	var jt api.TokenCreated
	ts.must(http.StatusCreated, "POST", api.PathJoinTokens, ts.admin, api.JoinTokenRequest{Groups: []string{"eu.prod"}}, &jt)

	// An artifact whose meta.json names an app that no ferry.yaml can.
	upload := func(app, sum string) func() (int, string) {
		return func() (int, string) {
			var b bytes.Buffer
			err := artifact.Pack(&b, []artifact.Entry{
				{Name: ".ferry", Dir: true},
				{Name: ferry.MetaPath, Data: []byte(`{"app":"` + app + `","version":"1","os":"linux","arch":"amd64","processes":["web"]}`)},
			}, artifact.FormatZstd, time.Unix(1_700_000_000, 0))
			if err != nil {
				t.Fatal(err)
			}
			if sum == "" {
				sum = sha(b.Bytes())
			}
			return ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b.Bytes()), map[string]string{api.SHA256Header: sum, api.AppHeader: app}, nil)
		}
	}
	get := func(path string) func() (int, string) {
		return func() (int, string) { return ts.call("GET", path, ts.admin, nil, nil) }
	}
	post := func(method, path, token string, body any) func() (int, string) {
		return func() (int, string) { return ts.call(method, path, token, body, nil) }
	}
	set := map[string]string{"A": "b"}
	for _, tc := range []struct {
		name string
		do   func() (int, string)
		want string
	}{
		{"an uppercase app's artifact", upload("Web", ""), `X-Ferry-App: "Web" is not a valid app name: 'W' is not allowed; use lowercase letters, digits, - and _`},
		{"a dotted app's artifact", upload("web.x", ""), `X-Ferry-App: "web.x" is not a valid app name: '.' is not allowed`},
		{"a short sha256", upload("web", "abc"), `X-Ferry-SHA256, the artifact's sha256: "abc" is not a sha256: want 64 hex digits, got 3 characters`},
		{"an uppercase app's config", post("PATCH", "/v1/apps/Web/config", ts.admin, api.ConfigChange{Set: set}), `app: "Web" is not a valid app name: 'W' is not allowed`},
		{"a config group with a slash", post("PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "eu/prod", Set: set}), `group: "eu/prod" is not a valid group name: '/' is not allowed`},
		{"logs of an uppercase app", get("/v1/logs?app=Web"), `logs: app: "Web" is not a valid app name: 'W' is not allowed`},
		{"logs of a dotted process", get("/v1/logs?app=web&process=web.1"), `logs: process: "web.1" is not a valid process name: '.' is not allowed`},
		{"a host name with a space", post("POST", api.PathAgentJoin, "", api.JoinRequest{Token: jt.Secret, Name: "web 1"}), `name: "web 1" is not a valid host name: ' ' is not allowed; use letters, digits, ., - and _`},
		{"a host name of 64", post("POST", api.PathAgentJoin, "", api.JoinRequest{Token: jt.Secret, Name: strings.Repeat("h", 64)}), `is not a valid host name: it has 64 characters`},
		{"a join token's group", post("POST", api.PathJoinTokens, ts.admin, api.JoinTokenRequest{Groups: []string{"-prod"}}), `groups: "-prod" is not a valid group name: it starts with '-'`},
		{"a join token replacing ..", post("POST", api.PathJoinTokens, ts.admin, api.JoinTokenRequest{Groups: []string{"eu.prod"}, Replace: ".."}), `replace: ".." is not a valid host name: it starts with '.'`},
	} {
		code, msg := tc.do()
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.name, code, msg, tc.want)
		}
	}
	// What the rules allow still works: a 63-character host name.
	ts.must(http.StatusOK, "POST", api.PathAgentJoin, "", api.JoinRequest{Token: jt.Secret, Name: strings.Repeat("h", 63)}, nil)
}

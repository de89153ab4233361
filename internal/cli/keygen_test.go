package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client/clienttest"
	"github.com/ferrydeploy/ferry/internal/signature"
)

// TestSignedDeploy: keygen, then deploy --sign signs the release record on
// the server, and the desired state the group's agent gets carries a
// signature that verifies against the .pub key.
func TestSignedDeploy(t *testing.T) {
	srv := startServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	publish(t, c, "hello", "v1")
	join := clienttest.JoinToken(t, c, "prod")
	fakeAgent(t, srv, join, "web-1", nil)
	key := filepath.Join(t.TempDir(), "ops")
	if out, code := runCLI(t, "keygen", key, "--comment", "ops"); code != 0 || !strings.Contains(out, signature.KeyType+" ") {
		t.Fatalf("keygen: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "keygen", key); code == 0 {
		t.Fatalf("keygen over an existing key: exit 0\n%s", out)
	}
	out, code := runCLI(t, "deploy", "hello", "v1", "--to", "prod", "--sign", key+".key")
	if code != 0 || !strings.Contains(out, "signed release v1 of hello") {
		t.Fatalf("deploy --sign: exit %d\n%s", code, out)
	}
	stdout, _, code := runCLIStreams(t, "", "releases", "hello", "-o", "json")
	var rels []api.Release
	if code != 0 || json.Unmarshal([]byte(stdout), &rels) != nil || len(rels) != 1 || len(rels[0].Signatures) != 1 {
		t.Fatalf("releases -o json: exit %d\n%s", code, stdout)
	}
	trusted, err := signature.LoadTrusted(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	agentClient := clienttest.Join(t, srv, clienttest.JoinToken(t, c, "prod"), "web-2")
	d, err := agentClient.Desired(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	app := d.Doc.Apps["hello"]
	if err := signature.Verify(trusted, signature.ReleaseMessage("hello", 1, app.SHA256, app.ConfigRev), app.Signatures); err != nil {
		t.Fatalf("the agent's desired state does not verify: %v (%+v)", err, app)
	}
	if out, code := runCLI(t, "deploy", "hello", "v1", "--to", "prod", "--sign", key+".pub"); code != ExitUsage {
		t.Errorf("deploy --sign with a public key: exit %d\n%s", code, out)
	}
}

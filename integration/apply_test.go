package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildHello runs `ferry build examples/hello` into a temp dist and returns
// the artifact's path and sha256.
func buildHello(t *testing.T, version string) (string, string) {
	t.Helper()
	return buildDir(t, "../examples/hello", version)
}

// buildDir runs `ferry build DIR` into a temp dist and returns the
// artifact's path and sha256.
func buildDir(t *testing.T, dir, version string) (string, string) {
	t.Helper()
	dist := t.TempDir()
	r := ferry(t, "", nil, "build", dir, "--dist", dist, "--version", version, "-o", "json")
	if r.code != 0 {
		t.Fatalf("ferry build: exit %d\n%s", r.code, r.stderr)
	}
	var out struct {
		Path, SHA256 string
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("build -o json: %v\n%s", err, r.stdout)
	}
	return out.Path, out.SHA256
}

func writeManifest(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "deploy.yml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBuildAndApplyHello is the README's first command, end to end.
func TestBuildAndApplyHello(t *testing.T) {
	art, sum := buildHello(t, "v1")
	dest := filepath.Join(t.TempDir(), "hello")
	m := writeManifest(t, fmt.Sprintf("src: file://%s\nchecksum: %s\ndest: %s\nsync_strategy: release\nshared: [log/]\n", art, sum, dest))
	r := ferry(t, "", nil, "apply", m)
	if r.code != 0 {
		t.Fatalf("apply: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "release v1-"+sum[:8]+" is current") {
		t.Fatalf("stdout %q", r.stdout)
	}
	serveHello(t, filepath.Join(dest, "current", "bin", "hello"), "v1")
	r = ferry(t, "", nil, "apply", m)
	if r.code != 0 || !strings.Contains(r.stdout, "already current") {
		t.Fatalf("re-apply: exit %d %q", r.code, r.stdout)
	}
}

func TestApplyExitCodes(t *testing.T) {
	art, sum := buildHello(t, "v1")
	dest := t.TempDir()
	good := writeManifest(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", art, sum, dest))
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no args", []string{"apply"}, 2, "accepts 1 arg"},
		{"bad flag", []string{"apply", "--nope", good}, 2, "unknown flag"},
		{"bad bandwidth", []string{"apply", "--max-bandwidth", "fast", good}, 2, "max-bandwidth"},
		{"unknown command", []string{"deploi"}, 2, "unknown command"},
		{"missing manifest", []string{"apply", "/no/such.yml"}, 1, "no such file"},
		{"bad field", []string{"apply", writeManifest(t, "dest: /x\nsync_strategy: copy\n")}, 1, "sync_strategy"},
		{"bad checksum", []string{"apply", writeManifest(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\n", art, strings.Repeat("a", 64), t.TempDir()))}, 1, "checksum mismatch"},
	}
	for _, tt := range tests {
		r := ferry(t, "", nil, tt.args...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: exit %d (want %d), stderr %q (want %q)", tt.name, r.code, tt.code, r.stderr, tt.want)
		}
	}
	// A held lock is exit 3.
	hold := exec.Command(ferryBin, "apply", "--max-bandwidth", "200KB", "-")
	slow := fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", art, sum, dest)
	hold.Stdin = strings.NewReader(slow)
	var holdErr bytes.Buffer
	hold.Stderr = &holdErr
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hold.Process.Kill(); hold.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(holdErr.String(), "fetching") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r := ferry(t, "", nil, "apply", good)
	if r.code != 3 || !strings.Contains(r.stderr, "locked") {
		t.Fatalf("apply while locked: exit %d %q", r.code, r.stderr)
	}
}

func TestApplyFromStdinEvents(t *testing.T) {
	art, sum := buildHello(t, "v1")
	dest := t.TempDir()
	m := writeManifest(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", art, sum, dest))
	body, _ := os.ReadFile(m)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()

	consul := fmt.Sprintf(`[{"ID":"a","Name":"deploy","Payload":%q,"LTime":1},{"ID":"b","Name":"deploy","Payload":%q,"LTime":2}]`,
		base64.StdEncoding.EncodeToString([]byte("http://127.0.0.1:1/wrong")),
		base64.StdEncoding.EncodeToString([]byte(srv.URL+"/deploy.yml")))
	for name, stdin := range map[string]string{
		"consul event array": consul,
		"serf payload":       srv.URL + "/deploy.yml\n",
		"manifest itself":    string(body),
	} {
		os.RemoveAll(dest)
		r := ferry(t, "", []byte(stdin), "apply", "-")
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", name, r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dest, "current", "bin", "hello")); err != nil {
			t.Fatalf("%s: not deployed: %v", name, err)
		}
	}
	r := ferry(t, "", []byte("[]"), "apply", "-")
	if r.code != 1 || !strings.Contains(r.stderr, "empty") {
		t.Fatalf("empty consul array: exit %d %q", r.code, r.stderr)
	}
}

// TestApplyTrustedKeys: with --trusted-keys, apply runs only a manifest
// whose .sig holds a signature by a trusted key; anything else is refused
// before dest is touched.
func TestApplyTrustedKeys(t *testing.T) {
	art, sum := buildHello(t, "v1")
	keys := t.TempDir()
	for _, k := range []string{"ops", "mallory"} {
		if r := ferry(t, "", nil, "keygen", filepath.Join(keys, k)); r.code != 0 {
			t.Fatalf("keygen %s: exit %d\n%s", k, r.code, r.stderr)
		}
	}
	dest := filepath.Join(t.TempDir(), "hello")
	m := writeManifest(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", art, sum, dest))
	trusted := filepath.Join(keys, "ops.pub")
	refused := func(why string) {
		t.Helper()
		r := ferry(t, "", nil, "apply", m, "--trusted-keys", trusted)
		if r.code != 1 || !strings.Contains(r.stderr, why) {
			t.Fatalf("apply: exit %d\n%s\nwant 1 and %q", r.code, r.stderr, why)
		}
		if _, err := os.Stat(dest); !os.IsNotExist(err) {
			t.Fatalf("a refused manifest touched dest: %v", err)
		}
	}
	refused("no signature file")
	if r := ferry(t, "", nil, "sign", m, "--key", filepath.Join(keys, "mallory.key")); r.code != 0 {
		t.Fatalf("sign: exit %d\n%s", r.code, r.stderr)
	}
	refused("signed only by keys this host does not trust")
	if r := ferry(t, "", nil, "sign", m, "--key", filepath.Join(keys, "ops.key")); r.code != 0 {
		t.Fatalf("sign: exit %d\n%s", r.code, r.stderr)
	}
	if r := ferry(t, "", nil, "apply", m, "--trusted-keys", trusted); r.code != 0 || !strings.Contains(r.stdout, "is current") {
		t.Fatalf("apply of a signed manifest: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A manifest changed after it was signed is refused.
	b, _ := os.ReadFile(m)
	os.WriteFile(m, append(b, []byte("keep_releases: 9\n")...), 0o644)
	os.RemoveAll(dest)
	refused("does not match it")
}

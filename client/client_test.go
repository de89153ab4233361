package client

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

func TestParseServer(t *testing.T) {
	for in, want := range map[string]string{
		"https://deploy.example.com:7400":  "https://deploy.example.com:7400",
		"deploy.example.com:7400/":         "https://deploy.example.com:7400",
		" https://10.0.0.5:7400/ ":         "https://10.0.0.5:7400",
		"http://127.0.0.1:7400":            "http://127.0.0.1:7400",
		"http://localhost:7400":            "http://localhost:7400",
		"http://[::1]:7400":                "http://[::1]:7400",
		"https://example.com/ferry-proxy/": "https://example.com/ferry-proxy",
	} {
		u, err := ParseServer(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseServer(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	for _, in := range []string{"", "ftp://x", "https://", "https://u:p@x:7400", "https://x:7400?a=b",
		// Tokens in the clear over a network.
		"http://10.0.0.5:7400", "http://deploy.example.com", "http://[::ffff:10.0.0.5]:7400", "http://127.0.0.1.example.com"} {
		if u, err := ParseServer(in); err == nil || ferry.ErrorCode(err) != ferry.EINVALID {
			t.Errorf("ParseServer(%q) = %v, %v; want an invalid error", in, u, err)
		}
	}
}

func TestPath(t *testing.T) {
	if got := path(api.PathLock, "hello", "eu/west"); got != "/v1/locks/hello/eu%2Fwest" {
		t.Errorf("got %s", got)
	}
	if got := path(api.PathDeployment, "d 1"); got != "/v1/deployments/d%201" {
		t.Errorf("got %s", got)
	}
}

func TestBlockingQuery(t *testing.T) {
	if q := blockingQuery(0, 0); len(q) != 0 {
		t.Errorf("got %v", q)
	}
	if q := blockingQuery(42, 300e9).Encode(); q != "index=42&wait=5m0s" {
		t.Errorf("got %s", q)
	}
}

// The agent's download source adds its credential for its own server only:
// a URL or redirect to another host (a store's signed URL) never gets it.
func TestArtifactSourceCredentialStaysHome(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Host+" "+r.Header.Get("Authorization"))
		w.Write([]byte("bytes"))
	}))
	defer srv.Close()
	c, err := New(srv.URL, "agent-secret", "")
	if err != nil {
		t.Fatal(err)
	}
	src := c.ArtifactSource()
	host := strings.TrimPrefix(srv.URL, "http://")
	other := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	for _, raw := range []string{srv.URL + "/v1/artifacts/ab", other + "/signed"} {
		u, _ := url.Parse(raw)
		rc, _, err := src.Open(t.Context(), u, 0)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if len(seen) != 2 || seen[0] != host+" Bearer agent-secret" || strings.Contains(seen[1], "agent-secret") {
		t.Errorf("requests: %q", seen)
	}
}

// TestArtifactSourceFailsOver: the artifact URL names the server that
// wrote the desired state; when nothing listens there any more (it was
// killed, and another server of the same state answers), the download is
// tried on the agent's other servers, with its credential.
func TestArtifactSourceFailsOver(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Host+" "+r.Header.Get("Authorization"))
		w.Write([]byte("bytes"))
	}))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	c, err := New(dead+","+srv.URL, "agent-secret", "")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(dead + "/v1/artifacts/ab")
	rc, _, err := c.ArtifactSource().Open(t.Context(), u, 0)
	if err != nil {
		t.Fatalf("download from a dead server with another one up: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "bytes" || len(seen) != 1 || seen[0] != strings.TrimPrefix(srv.URL, "http://")+" Bearer agent-secret" {
		t.Errorf("got %q; requests %q", b, seen)
	}
}

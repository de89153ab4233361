package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/store/blob"
	"github.com/ferrydeploy/ferry/internal/store/blob/blobtest"
)

// TestDirectDownload: with DirectDownload an agent's download is sent to
// the bucket with a signed URL; the agent's own source follows it, resumes
// there, and never shows the bucket its ferry credential. Others still
// download through the server, and a store that cannot sign is refused at
// start.
func TestDirectDownload(t *testing.T) {
	_, err := newServer(t, Config{Data: t.TempDir(), Listen: "127.0.0.1:0", DirectDownload: time.Minute})
	if ferry.ErrorCode(err) != ferry.EINVALID || !strings.Contains(err.Error(), "cannot sign") {
		t.Fatalf("DirectDownload on a directory store: %v, want a refusal that says it cannot sign", err)
	}

	s3 := blobtest.StartS3(t)
	// The bucket's requests pass a recorder, to see what reaches it.
	target, _ := url.Parse(s3.Endpoint)
	var mu sync.Mutex
	var seen []*http.Request
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Clone(context.Background()))
		mu.Unlock()
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer rec.Close()
	s3.Bucket(t, "arts", "")
	bs, err := blob.Open(context.Background(), "s3://arts/ferry?endpoint="+rec.URL+"&use_path_style=true&region=us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	ts := startServer(t, t.TempDir(), func(c *Config) { c.Store, c.DirectDownload = bs, time.Minute })
	a := ts.publish("web", "1.0.0")
	cred := ts.join("web-1", "prod")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: a.SHA256}, nil)
	ts.waitDesired(cred, "web", "v1")
	artURL := ts.srv.URL() + "/v1/artifacts/" + a.SHA256
	want, err := readAllBlob(context.Background(), ts, "artifacts/web/"+a.SHA256+".tar.zst")
	if err != nil {
		t.Fatal(err)
	}

	noFollow := &http.Client{Transport: ts.client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", artURL, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := get(cred); resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(resp.Header.Get("Location"), rec.URL+"/arts/ferry/artifacts/web/"+a.SHA256+".tar.zst?") {
		t.Fatalf("agent's GET: %s to %q, want 307 to the bucket's signed URL", resp.Status, resp.Header.Get("Location"))
	}
	if resp := get(ts.admin); resp.StatusCode != http.StatusOK {
		t.Fatalf("admin's GET: %s, want the bytes through the server", resp.Status)
	}

	c, err := client.New(ts.srv.URL(), cred, ts.srv.CASHA256())
	if err != nil {
		t.Fatal(err)
	}
	reg := fetch.Registry{"https": c.ArtifactSource()}
	f, err := os.CreateTemp(t.TempDir(), "art")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := reg.Download(context.Background(), artURL, f, fetch.Options{Checksum: a.SHA256})
	if err != nil || res.SHA256 != a.SHA256 {
		t.Fatalf("agent download: %+v, %v", res, err)
	}
	u, _ := url.Parse(artURL)
	rc, resumed, err := c.ArtifactSource().Open(context.Background(), u, 100)
	if err != nil {
		t.Fatal(err)
	}
	tail, _ := io.ReadAll(rc)
	rc.Close()
	if !resumed || !bytes.Equal(tail, want[100:]) {
		t.Fatalf("resume at 100 from the bucket: resumed=%v, %d bytes, want the %d-byte tail", resumed, len(tail), len(want)-100)
	}
	mu.Lock()
	defer mu.Unlock()
	gets := 0
	for _, r := range seen {
		if strings.Contains(r.Header.Get("Authorization"), cred) || strings.Contains(r.URL.RawQuery, cred) {
			t.Fatalf("the bucket saw the agent's credential: %s %s", r.Method, r.URL)
		}
		if r.Method == "GET" && r.URL.Query().Get("X-Amz-Signature") != "" {
			gets++
		}
	}
	if gets < 2 {
		t.Fatalf("the bucket answered %d signed GETs, want the download and the resume", gets)
	}
}

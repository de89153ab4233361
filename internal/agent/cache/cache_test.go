package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// artifactServer serves body at every path and counts requests.
func artifactServer(t *testing.T, body []byte, gate <-chan struct{}) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// files lists Dir/sha256, temp files included.
func files(t *testing.T, c *Cache) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(c.Dir, "sha256"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// waiters returns how many Gets wait on the download of digest, or -1 when
// none is in progress.
func waiters(c *Cache, digest string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.inflight[digest]; d != nil {
		return d.waiters
	}
	return -1
}

func TestGetMissThenHit(t *testing.T) {
	body := []byte(strings.Repeat("artifact bytes ", 10000))
	srv, requests := artifactServer(t, body, nil)
	c := &Cache{Dir: t.TempDir()}
	digest := digestOf(body)

	path, hit, err := c.Get(t.Context(), srv.URL+"/a.tar.zst", strings.ToUpper(digest))
	if err != nil || hit {
		t.Fatalf("first Get: hit %v, err %v", hit, err)
	}
	if path != filepath.Join(c.Dir, "sha256", digest) || path != c.Path(digest) {
		t.Errorf("path %s", path)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("cached bytes differ (err %v)", err)
	}
	if got := files(t, c); !slices.Equal(got, []string{digest}) {
		t.Errorf("cache dir holds %v, want only the digest", got)
	}

	path2, hit, err := c.Get(t.Context(), srv.URL+"/a.tar.zst", digest)
	if err != nil || !hit || path2 != path {
		t.Fatalf("second Get: %s, hit %v, err %v", path2, hit, err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

func TestGetBadChecksum(t *testing.T) {
	srv, _ := artifactServer(t, []byte("not what was promised"), nil)
	c := &Cache{Dir: t.TempDir()}
	_, _, err := c.Get(t.Context(), srv.URL, digestOf([]byte("the real artifact")))
	if !errors.Is(err, fetch.ErrChecksum) {
		t.Fatalf("err %v, want fetch.ErrChecksum", err)
	}
	if got := files(t, c); len(got) != 0 {
		t.Errorf("a failed download left %v", got)
	}
}

func TestGetInvalidDigest(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	for _, d := range []string{"", "abc", strings.Repeat("z", 64)} {
		if _, _, err := c.Get(t.Context(), "/nowhere", d); ferry.ErrorCode(err) != ferry.EINVALID {
			t.Errorf("%q: err %v, want EINVALID", d, err)
		}
	}
	// Says what is wrong, by ferry.CheckSHA256.
	if _, _, err := c.Get(t.Context(), "/nowhere", strings.Repeat("z", 64)); err == nil || !strings.HasPrefix(err.Error(), `cache: "zzz`) || !strings.HasSuffix(err.Error(), `is not a sha256: 'z' is not a hex digit (0-9, a-f)`) {
		t.Errorf("64 × z: %v", err)
	}
}

func TestGetFromFile(t *testing.T) {
	body := []byte("local artifact")
	src := filepath.Join(t.TempDir(), "a.tar.zst")
	if err := os.WriteFile(src, body, 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Cache{Dir: t.TempDir()}
	path, hit, err := c.Get(t.Context(), src, digestOf(body))
	if err != nil || hit {
		t.Fatalf("hit %v, err %v", hit, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, body) {
		t.Errorf("cached %q", got)
	}
}

// An empty file under a digest's name is what a crash leaves when a writer
// skipped fsync; Get must not hand it out as the artifact.
func TestGetReplacesEmptyEntry(t *testing.T) {
	body := []byte("the artifact")
	srv, requests := artifactServer(t, body, nil)
	c := &Cache{Dir: t.TempDir()}
	digest := digestOf(body)
	if err := os.MkdirAll(filepath.Dir(c.Path(digest)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Path(digest), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	path, hit, err := c.Get(t.Context(), srv.URL, digest)
	if err != nil || hit || requests.Load() != 1 {
		t.Fatalf("hit %v, err %v, requests %d", hit, err, requests.Load())
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, body) {
		t.Errorf("cached %q", got)
	}
}

func TestGetConcurrentDownloadsOnce(t *testing.T) {
	body := []byte(strings.Repeat("x", 1<<20))
	gate := make(chan struct{})
	srv, requests := artifactServer(t, body, gate)
	c := &Cache{Dir: t.TempDir()}
	digest := digestOf(body)

	const n = 8
	var wg sync.WaitGroup
	paths := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { paths[i], _, errs[i] = c.Get(t.Context(), srv.URL, digest) })
	}
	// Open the gate only once every other Get waits on the first.
	testenv.WaitFor(t, "Gets waiting on one download", 10*time.Second, func() bool { return waiters(c, digest) == n-1 })
	close(gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || paths[i] != c.Path(digest) {
			t.Errorf("Get %d: %s, %v", i, paths[i], errs[i])
		}
	}
	if got := requests.Load(); got != 1 {
		t.Errorf("server saw %d requests, want 1", got)
	}
}

// A Get waiting on another's download must not fail because the other
// caller gave up.
func TestGetWaiterOutlivesCancelledDownloader(t *testing.T) {
	body := []byte("artifact")
	gate := make(chan struct{})
	srv, _ := artifactServer(t, body, gate)
	c := &Cache{Dir: t.TempDir()}
	digest := digestOf(body)

	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() { _, _, err := c.Get(ctx, srv.URL, digest); first <- err }()
	testenv.WaitFor(t, "the first Get to start", 10*time.Second, func() bool { return waiters(c, digest) == 0 })
	second := make(chan error, 1)
	go func() { _, _, err := c.Get(t.Context(), srv.URL, digest); second <- err }()
	testenv.WaitFor(t, "the second Get to wait", 10*time.Second, func() bool { return waiters(c, digest) == 1 })
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first Get: %v, want context.Canceled", err)
	}
	close(gate)
	if err := <-second; err != nil {
		t.Fatalf("second Get: %v", err)
	}
}

func TestGetCancelledMidTransfer(t *testing.T) {
	body := make([]byte, 1<<20)
	rand.Read(body)
	sent := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		close(sent)
		<-r.Context().Done() // a server that stalls halfway
	}))
	defer srv.Close()
	c := &Cache{Dir: t.TempDir()}
	digest := digestOf(body)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, _, err := c.Get(ctx, srv.URL, digest); done <- err }()
	<-sent
	// Cancel only once the temp file holds some of the bytes.
	testenv.WaitFor(t, "a partial download", 10*time.Second, func() bool {
		names := files(t, c)
		if len(names) != 1 {
			return false
		}
		fi, err := os.Stat(filepath.Join(c.Dir, "sha256", names[0]))
		return err == nil && fi.Size() > 0
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if got := files(t, c); len(got) != 0 {
		t.Errorf("an interrupted download left %v", got)
	}
}

func TestPrune(t *testing.T) {
	c := &Cache{Dir: t.TempDir(), MaxBytes: 200}
	dir := filepath.Join(c.Dir, "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(name string, size int, age time.Duration) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, size), 0o444); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	a, b, cc, d := digestOf([]byte("a")), digestOf([]byte("b")), digestOf([]byte("c")), digestOf([]byte("d"))
	write(a, 100, 4*time.Hour) // oldest, but used again below
	write(b, 100, 3*time.Hour)
	write(cc, 100, 2*time.Hour)
	write(d, 100, time.Hour)
	write("."+a+".tmp-1", 50, 2*time.Hour) // a crashed download
	write("."+b+".tmp-2", 50, 0)           // one in progress
	write("README", 10, 10*time.Hour)      // not ours: left alone

	// A hit makes a the most recently used; the URL is never contacted.
	if _, hit, err := c.Get(t.Context(), "http://127.0.0.1:1/never", a); err != nil || !hit {
		t.Fatalf("hit %v, err %v", hit, err)
	}
	removed, err := c.Prune(map[string]bool{cc: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "."+a+".tmp-1"), filepath.Join(dir, b), filepath.Join(dir, d)}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v\nwant %v", removed, want)
	}
	left := files(t, c)
	slices.Sort(left)
	wantLeft := []string{"." + b + ".tmp-2", "README", a, cc}
	slices.Sort(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Errorf("left %v\nwant %v", left, wantLeft)
	}

	// Within the bound: nothing more goes.
	if removed, err := c.Prune(nil); err != nil || len(removed) != 0 {
		t.Errorf("second Prune removed %v, %v", removed, err)
	}
	if removed, err := (&Cache{Dir: filepath.Join(t.TempDir(), "none")}).Prune(nil); err != nil || removed != nil {
		t.Errorf("Prune of a missing dir: %v, %v", removed, err)
	}
}

// TestModesAreTheAgentsAlone: an artifact holds what its release does
// (config, keys), so the cache is readable by the agent's user only, and
// a directory an older ferry made world-readable is closed.
func TestModesAreTheAgentsAlone(t *testing.T) {
	body := []byte("an artifact")
	src := filepath.Join(t.TempDir(), "a.tar.zst")
	if err := os.WriteFile(src, body, 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Cache{Dir: filepath.Join(t.TempDir(), "cache")}
	path, _, err := c.Get(t.Context(), src, digestOf(body))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{c.Dir: 0o700, filepath.Dir(path): 0o700, path: 0o400} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v (%v), want mode %v", p, fi.Mode().Perm(), err, want)
		}
	}
	os.Chmod(filepath.Dir(path), 0o755)
	other := []byte("another artifact")
	os.WriteFile(src, other, 0o644)
	if _, _, err := c.Get(t.Context(), src, digestOf(other)); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Dir(path)); fi.Mode().Perm() != 0o700 {
		t.Errorf("sha256/ left at %v by a download", fi.Mode().Perm())
	}
}

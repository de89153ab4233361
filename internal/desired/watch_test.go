package desired

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/fsutil"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// docFor returns a valid document whose one app has the given release, so
// each version is told apart by Apps["web"].Release.
func docFor(release string) []byte {
	return []byte("apps:\n  web:\n    artifact: file:///srv/web.tar.zst\n    sha256: " + sum + "\n    release: " + release + "\n")
}

// put writes b into path in place, as `cat > path` does: truncate, write.
func put(t *testing.T, path string, b []byte) {
	t.Helper()
	must(t, os.WriteFile(path, b, 0o644))
}

// replace writes b to a temp file and renames it over path, as editors and
// atomic writers do.
func replace(t *testing.T, path string, b []byte) {
	t.Helper()
	must(t, fsutil.WriteFile(path, b, 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type call struct {
	doc *Doc
	err error
	at  time.Time
}

// startWatch runs Watch until the test ends and returns its calls of fn.
func startWatch(t *testing.T, loc string, opt Options) <-chan call {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	calls := make(chan call, 100)
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, loc, opt, func(d *Doc, err error) { calls <- call{d, err, time.Now()} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	})
	return calls
}

func next(t *testing.T, calls <-chan call) call {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("fn was not called")
		return call{}
	}
}

// wantRelease takes the next call and fails unless it is a document with
// the given release.
func wantRelease(t *testing.T, calls <-chan call, release string) call {
	t.Helper()
	c := next(t, calls)
	if c.err != nil {
		t.Fatalf("want release %s, got error %v", release, c.err)
	}
	if got := c.doc.Apps["web"].Release; got != release {
		t.Fatalf("want release %s, got %q (%+v)", release, got, c.doc)
	}
	return c
}

func wantError(t *testing.T, calls <-chan call, contains string) error {
	t.Helper()
	c := next(t, calls)
	if c.err == nil || !strings.Contains(c.err.Error(), contains) {
		t.Fatalf("want an error containing %q, got doc %+v, error %v", contains, c.doc, c.err)
	}
	if c.doc != nil {
		t.Errorf("doc %+v given with an error", c.doc)
	}
	return c.err
}

func TestWatchFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "desired.yaml")
	put(t, path, docFor("v1"))
	calls := startWatch(t, "file://"+path, Options{})
	wantRelease(t, calls, "v1")

	// In place, as `cat > file` does: truncate, then write.
	start := time.Now()
	put(t, path, docFor("v2"))
	if c := wantRelease(t, calls, "v2"); c.at.Sub(start) > time.Second {
		t.Errorf("in-place change seen after %v, want under 1s", c.at.Sub(start))
	}

	// Replaced by rename, as editors and atomic writers do.
	start = time.Now()
	replace(t, path, docFor("v3"))
	if c := wantRelease(t, calls, "v3"); c.at.Sub(start) > time.Second {
		t.Errorf("rename-over seen after %v, want under 1s", c.at.Sub(start))
	}

	// A touch changes no bytes: the next call must be v4, not v3 again.
	now := time.Now().Add(time.Minute)
	must(t, os.Chtimes(path, now, now))
	replace(t, path, docFor("v4"))
	wantRelease(t, calls, "v4")

	must(t, os.Remove(path))
	if err := wantError(t, calls, "no such file"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v is not fs.ErrNotExist", err)
	}
	// The same bytes as before the error are passed on again, so the caller
	// learns the error is over.
	put(t, path, docFor("v4"))
	wantRelease(t, calls, "v4")

	replace(t, path, []byte("apps:\n  web: {artifact: x}\n"))
	wantError(t, calls, "apps.web.sha256: missing")
	replace(t, path, docFor("v5"))
	wantRelease(t, calls, "v5")

	// An emptied file is a valid "run nothing", once it stays empty.
	put(t, path, nil)
	if c := next(t, calls); c.err != nil || len(c.doc.Apps) != 0 {
		t.Fatalf("want an empty doc, got %+v, %v", c.doc, c.err)
	}
}

func TestWatchFileAppears(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "desired.yaml")
	calls := startWatch(t, path, Options{})
	wantError(t, calls, "no such file")
	replace(t, path, docFor("v1"))
	wantRelease(t, calls, "v1")
}

// Without inotify (its per-user limit of instances is easily reached on a
// busy host), the stat poll still sees every change.
func TestWatchFileWithoutInotify(t *testing.T) {
	defer func(p time.Duration) { noInotify, statPoll = false, p }(statPoll)
	noInotify, statPoll = true, 10*time.Millisecond
	path := filepath.Join(t.TempDir(), "desired.yaml")
	put(t, path, docFor("v1"))
	calls := startWatch(t, path, Options{})
	wantRelease(t, calls, "v1")
	replace(t, path, docFor("v2"))
	wantRelease(t, calls, "v2")
	must(t, os.Remove(path))
	wantError(t, calls, "no such file")
	put(t, path, docFor("v3"))
	wantRelease(t, calls, "v3")
}

// A directory replaced as a whole (a rename of a new one over it) loses the
// watch; the stat poll finds the new directory and watches it.
func TestWatchFileDirReplaced(t *testing.T) {
	defer func(p time.Duration) { statPoll = p }(statPoll)
	statPoll = 10 * time.Millisecond
	root := t.TempDir()
	dir := filepath.Join(root, "conf")
	path := filepath.Join(dir, "desired.yaml")
	for _, d := range []string{dir, dir + ".new"} {
		must(t, os.Mkdir(d, 0o755))
	}
	put(t, path, docFor("v1"))
	calls := startWatch(t, path, Options{})
	wantRelease(t, calls, "v1")
	put(t, filepath.Join(dir+".new", "desired.yaml"), docFor("v2"))
	must(t, os.Rename(dir, dir+".old"))
	must(t, os.Rename(dir+".new", dir))
	wantRelease(t, calls, "v2")
	// And followed from then on.
	replace(t, path, docFor("v3"))
	wantRelease(t, calls, "v3")
}

func TestWatchBadLocation(t *testing.T) {
	for _, loc := range []string{"", "ftp://example.com/desired.yaml"} {
		if err := Watch(t.Context(), loc, Options{}, func(*Doc, error) { t.Error("fn called") }); err == nil {
			t.Errorf("%q: no error", loc)
		}
	}
}

// docServer serves a document with an ETag, counting what it answers.
type docServer struct {
	mu       sync.Mutex
	body     []byte
	status   int // when set, answered instead of the document
	requests int
	notMod   int // 304s answered to If-None-Match
}

func (s *docServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.status != 0 {
		http.Error(w, "broken", s.status)
		return
	}
	sum := sha256.Sum256(s.body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		s.notMod++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(s.body)
}

func (s *docServer) set(body []byte, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = body, status
}

func TestWatchURL(t *testing.T) {
	s := &docServer{body: docFor("v1")}
	srv := httptest.NewServer(s)
	defer srv.Close()
	calls := startWatch(t, srv.URL+"/desired.yaml", Options{Poll: 10 * time.Millisecond})
	wantRelease(t, calls, "v1")

	// fn runs before the next request, so after two 304s any call it made
	// for the unchanged document would be waiting in calls.
	testenv.WaitFor(t, "two 304s", 10*time.Second, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.notMod >= 2 })
	if len(calls) != 0 {
		t.Fatalf("fn called for an unchanged document: %+v", <-calls)
	}

	s.set(docFor("v2"), 0)
	wantRelease(t, calls, "v2")

	s.set(docFor("v2"), http.StatusInternalServerError)
	wantError(t, calls, "500 Internal Server Error")
	s.set(docFor("v2"), 0)
	wantRelease(t, calls, "v2")

	s.set([]byte("apps: [\n"), 0)
	wantError(t, calls, "desired state")
}

func TestWatchURLLastModified(t *testing.T) {
	var mu sync.Mutex
	var conditional int
	mod := time.Now().Add(-time.Hour)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.Header.Get("If-Modified-Since") != "" {
			conditional++
		}
		mu.Unlock()
		http.ServeContent(w, r, "desired.yaml", mod, strings.NewReader(string(docFor("v1"))))
	}))
	defer srv.Close()
	calls := startWatch(t, srv.URL, Options{Poll: 10 * time.Millisecond})
	wantRelease(t, calls, "v1")
	testenv.WaitFor(t, "a conditional request", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return conditional >= 2 })
	if len(calls) != 0 {
		t.Fatalf("fn called for an unchanged document: %+v", <-calls)
	}
}

// The rules the watchers rely on, without timing: same bytes, no call;
// same error twice, one call; after an error, the same bytes again.
func TestReporter(t *testing.T) {
	var got []string
	r := &reporter{loc: "test", fn: func(d *Doc, err error) {
		if err != nil {
			got = append(got, "error")
			return
		}
		got = append(got, d.Apps["web"].Release)
	}}
	r.bytes(docFor("v1"))
	r.bytes(docFor("v1"))
	r.bytes(docFor("v2"))
	r.fail(errors.New("gone"))
	r.fail(errors.New("gone"))
	r.bytes(docFor("v2"))
	r.bytes([]byte("apps: [\n"))
	r.bytes([]byte("apps: [\n"))
	r.bytes(docFor("v2"))
	if want := "v1 v2 error v2 error v2"; strings.Join(got, " ") != want {
		t.Errorf("calls %q, want %q", strings.Join(got, " "), want)
	}
}

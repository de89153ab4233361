package fetch_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// payload returns n deterministic, incompressible bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'f', 'e', 'r', 'r', 'y'})
	r.Read(b)
	return b
}

func hexSum(h interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
}, b []byte) string {
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Hex(b []byte) string { return hexSum(sha256.New(), b) }

// dest returns an empty file in a fresh temp dir, closed at cleanup.
func dest(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "dest"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func contents(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serve starts a real HTTP server on loopback, closed at cleanup.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// counter counts the requests a handler sees and remembers their Range
// headers.
type counter struct {
	mu     sync.Mutex
	ranges []string
	times  []time.Time
}

func (c *counter) see(r *http.Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ranges = append(c.ranges, r.Header.Get("Range"))
	c.times = append(c.times, time.Now())
	return len(c.ranges)
}

func (c *counter) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ranges)
}

func (c *counter) rangeHeaders() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ranges...)
}

// dropAfter answers 200 with the full Content-Length of body, sends only its
// first n bytes and closes the connection, as a dying peer or proxy would.
func dropAfter(t *testing.T, w http.ResponseWriter, body []byte, n int) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", len(body))
	buf.Write(body[:n])
	if err := buf.Flush(); err != nil {
		t.Error(err)
	}
}

func TestDownloadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	body := payload(100_000)
	path := filepath.Join(dir, "artifact.tar")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		src  string
	}{
		{"plain path", path},
		{"file URL", "file://" + path},
		{"file URL with localhost", "file://localhost" + path},
		{"file URL with upper-case scheme", "FILE://" + path},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := dest(t)
			// Junk longer than the body shows Download truncates.
			if _, err := f.Write(bytes.Repeat([]byte("x"), 200_000)); err != nil {
				t.Fatal(err)
			}
			res, err := fetch.NewRegistry().Download(t.Context(), tt.src, f, fetch.Options{Checksum: sha256Hex(body)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes != int64(len(body)) || res.SHA256 != sha256Hex(body) || res.Sum != sha256Hex(body) {
				t.Errorf("result = %+v, want %d bytes and sha256 %s", res, len(body), sha256Hex(body))
			}
			if !bytes.Equal(contents(t, f), body) {
				t.Error("file differs from the source")
			}
		})
	}
}

func TestDownloadFileMissing(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope.tar")
	for _, src := range []string{missing, "file://" + missing} {
		t.Run(src, func(t *testing.T) {
			_, err := fetch.NewRegistry().Download(t.Context(), src, dest(t), fetch.Options{Retries: 1})
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("err = %v, want fs.ErrNotExist", err)
			}
			if !strings.Contains(err.Error(), "nope.tar") {
				t.Errorf("err = %q, want it to name the file", err)
			}
		})
	}
}

func TestFileOpenOffset(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, resumed, err := fetch.File{}.Open(t.Context(), &url.URL{Scheme: "file", Path: path}, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "456789" || !resumed {
		t.Errorf("read %q resumed=%v, want %q resumed=true", b, resumed, "456789")
	}
}

func TestDownloadHTTP(t *testing.T) {
	t.Parallel()
	body := payload(300_000)
	var ua, acceptEnc atomic.Value
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		ua.Store(r.Header.Get("User-Agent"))
		acceptEnc.Store(r.Header.Get("Accept-Encoding"))
		w.Write(body)
	})
	f := dest(t)
	res, err := fetch.NewRegistry().Download(t.Context(), srv.URL+"/a.tar", f, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(body)) || res.SHA256 != sha256Hex(body) || res.Sum != "" {
		t.Errorf("result = %+v, want %d bytes, sha256 %s and no Sum", res, len(body), sha256Hex(body))
	}
	if !bytes.Equal(contents(t, f), body) {
		t.Error("file differs from the served body")
	}
	if ua.Load() != "ferry" {
		t.Errorf("User-Agent = %q, want ferry", ua.Load())
	}
	if acceptEnc.Load() != "" {
		t.Errorf("Accept-Encoding = %q, want none: the bytes are stored as served", acceptEnc.Load())
	}
}

func TestDownloadChecksums(t *testing.T) {
	t.Parallel()
	body := payload(50_000)
	var c counter
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		c.see(r)
		w.Write(body)
	})
	tests := []struct {
		name string
		sum  string
	}{
		{"md5", hexSum(md5.New(), body)},
		{"sha1", hexSum(sha1.New(), body)},
		{"sha256", hexSum(sha256.New(), body)},
		{"sha512", hexSum(sha512.New(), body)},
		{"upper case", strings.ToUpper(hexSum(sha256.New(), body))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := dest(t)
			res, err := fetch.NewRegistry().Download(t.Context(), srv.URL, f, fetch.Options{Checksum: tt.sum})
			if err != nil {
				t.Fatal(err)
			}
			if res.Sum != strings.ToLower(tt.sum) {
				t.Errorf("Sum = %s, want %s", res.Sum, strings.ToLower(tt.sum))
			}
			if res.SHA256 != sha256Hex(body) {
				t.Errorf("SHA256 = %s, want %s", res.SHA256, sha256Hex(body))
			}
			if !bytes.Equal(contents(t, f), body) {
				t.Error("file differs from the served body")
			}
		})
	}
}

func TestDownloadChecksumMismatch(t *testing.T) {
	t.Parallel()
	body := payload(10_000)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	wrong := sha256Hex([]byte("another file"))
	res, err := fetch.NewRegistry().Download(t.Context(), srv.URL+"/a.tar", dest(t), fetch.Options{Checksum: wrong})
	if !errors.Is(err, fetch.ErrChecksum) {
		t.Fatalf("err = %v, want fetch.ErrChecksum", err)
	}
	if code := ferry.ErrorCode(err); code != ferry.EINVALID {
		t.Errorf("code = %q, want %q", code, ferry.EINVALID)
	}
	for _, want := range []string{wrong, sha256Hex(body), "/a.tar"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to contain %s", err, want)
		}
	}
	if res.Sum != sha256Hex(body) {
		t.Errorf("Sum = %s, want the digest of what arrived", res.Sum)
	}
}

func TestDownloadBadChecksum(t *testing.T) {
	t.Parallel()
	var c counter
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		c.see(r)
		w.Write([]byte("x"))
	})
	tests := []struct {
		name, sum, want string
	}{
		{"too short", "abc123", "6 hex digits"},
		{"odd length", "abc", "3 hex digits"},
		{"between lengths", strings.Repeat("a", 63), "63 hex digits"},
		{"too long", strings.Repeat("a", 129), "129 hex digits"},
		{"not hex", strings.Repeat("zz", 32), "not hexadecimal"},
		{"not hex and odd", "xyz", "not hexadecimal"},
		{"prefixed", "sha256:" + strings.Repeat("a", 64), "not hexadecimal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fetch.NewRegistry().Download(t.Context(), srv.URL, dest(t), fetch.Options{Checksum: tt.sum})
			if err == nil {
				t.Fatal("no error")
			}
			if code := ferry.ErrorCode(err); code != ferry.EINVALID {
				t.Errorf("code = %q, want %q", code, ferry.EINVALID)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to contain %q", err, tt.want)
			}
			if _, err := fetch.HashFor(tt.sum); err == nil {
				t.Error("HashFor accepted it")
			}
		})
	}
	if n := c.n(); n != 0 {
		t.Errorf("server saw %d requests; a bad checksum should fail before fetching", n)
	}
}

func TestDownloadHTTPStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code    int
		retries int
	}{
		{http.StatusNotFound, 0},
		{http.StatusNotFound, 2},
		{http.StatusInternalServerError, 3},
		{http.StatusForbidden, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d retries %d", tt.code, tt.retries), func(t *testing.T) {
			t.Parallel()
			var c counter
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				c.see(r)
				http.Error(w, "no", tt.code)
			})
			f := dest(t)
			_, err := fetch.NewRegistry().Download(t.Context(), srv.URL+"/a.tar", f, fetch.Options{Retries: tt.retries, RetryWait: 5 * time.Millisecond})
			var se *fetch.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *fetch.StatusError", err)
			}
			if se.Code != tt.code {
				t.Errorf("Code = %d, want %d", se.Code, tt.code)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tt.code)) {
				t.Errorf("err = %q, want it to contain the status", err)
			}
			if n := c.n(); n != tt.retries+1 {
				t.Errorf("server saw %d requests, want %d", n, tt.retries+1)
			}
			if b := contents(t, f); len(b) != 0 {
				t.Errorf("file holds %d bytes of the error page", len(b))
			}
		})
	}
}

func TestDownloadRetryThenSuccess(t *testing.T) {
	t.Parallel()
	body := payload(20_000)
	var c counter
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if c.see(r) <= 2 {
			http.Error(w, "busy", http.StatusInternalServerError)
			return
		}
		w.Write(body)
	})
	f := dest(t)
	res, err := fetch.NewRegistry().Download(t.Context(), srv.URL, f, fetch.Options{Retries: 3, RetryWait: 5 * time.Millisecond, Checksum: sha256Hex(body)})
	if err != nil {
		t.Fatal(err)
	}
	if n := c.n(); n != 3 {
		t.Errorf("server saw %d requests, want 3", n)
	}
	if res.Bytes != int64(len(body)) || !bytes.Equal(contents(t, f), body) {
		t.Errorf("got %d bytes, want the body's %d", res.Bytes, len(body))
	}
}

func TestDownloadRetryWait(t *testing.T) {
	t.Parallel()
	const wait = 40 * time.Millisecond
	tests := []struct {
		name    string
		backoff bool
		want    []time.Duration // least gap before each retry
	}{
		{"constant", false, []time.Duration{wait, wait, wait}},
		{"backoff", true, []time.Duration{wait, 2 * wait, 4 * wait}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c counter
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				c.see(r)
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			_, err := fetch.NewRegistry().Download(t.Context(), srv.URL, dest(t), fetch.Options{Retries: 3, RetryWait: wait, Backoff: tt.backoff})
			if err == nil {
				t.Fatal("no error")
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if len(c.times) != 4 {
				t.Fatalf("server saw %d requests, want 4", len(c.times))
			}
			for i, least := range tt.want {
				if gap := c.times[i+1].Sub(c.times[i]); gap < least {
					t.Errorf("gap before retry %d = %s, want at least %s", i+1, gap, least)
				}
			}
		})
	}
}

func TestDownloadNegativeRetries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := dest(t)
	res, err := fetch.NewRegistry().Download(t.Context(), path, f, fetch.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != 5 || string(contents(t, f)) != "hello" {
		t.Errorf("got %d bytes %q, want hello: negative Retries must still try once", res.Bytes, contents(t, f))
	}
	_, err = fetch.NewRegistry().Download(t.Context(), filepath.Join(dir, "missing"), dest(t), fetch.Options{Retries: -1})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestDownloadResume(t *testing.T) {
	t.Parallel()
	body := payload(1 << 20)
	const half = 1 << 19
	tests := []struct {
		name       string
		honorRange bool
		wantRanges []string
	}{
		{"server honours Range", true, []string{"", fmt.Sprintf("bytes=%d-", half)}},
		{"server ignores Range", false, []string{"", fmt.Sprintf("bytes=%d-", half)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c counter
			var served206 atomic.Bool
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if c.see(r) == 1 {
					dropAfter(t, w, body, half)
					return
				}
				if tt.honorRange {
					// Recorded as the header goes out: once the body is sent
					// the client may finish before this handler returns.
					http.ServeContent(statusHook{w, func(code int) {
						served206.Store(code == http.StatusPartialContent)
					}}, r, "a.tar", time.Time{}, bytes.NewReader(body))
					return
				}
				w.Write(body)
			})
			f := dest(t)
			res, err := fetch.NewRegistry().Download(t.Context(), srv.URL+"/a.tar", f, fetch.Options{Retries: 2, Checksum: sha256Hex(body)})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.rangeHeaders(); !equal(got, tt.wantRanges) {
				t.Errorf("Range headers = %q, want %q", got, tt.wantRanges)
			}
			if tt.honorRange && !served206.Load() {
				t.Error("the second request was not answered with 206")
			}
			if res.Bytes != int64(len(body)) || res.SHA256 != sha256Hex(body) {
				t.Errorf("result = %+v, want %d bytes", res, len(body))
			}
			if !bytes.Equal(contents(t, f), body) {
				t.Error("file differs from the served body")
			}
		})
	}
}

// A 206 for a range other than the one asked for must not be spliced in.
func TestDownloadResumeWrongRange(t *testing.T) {
	t.Parallel()
	body := payload(10_000)
	var c counter
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if c.see(r) == 1 {
			dropAfter(t, w, body, 4000)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body)
	})
	_, err := fetch.NewRegistry().Download(t.Context(), srv.URL, dest(t), fetch.Options{Retries: 1})
	var se *fetch.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusPartialContent {
		t.Fatalf("err = %v, want a *fetch.StatusError for 206", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDownloadTruncated(t *testing.T) {
	t.Parallel()
	body := payload(100_000)
	var c counter
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		c.see(r)
		dropAfter(t, w, body, 30_000)
	})
	res, err := fetch.NewRegistry().Download(t.Context(), srv.URL, dest(t), fetch.Options{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if res.Bytes != 30_000 {
		t.Errorf("Bytes = %d, want 30000", res.Bytes)
	}
	if n := c.n(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

// Ported from stretcher's TestDeployManifestMaxBandwidth. The band is wide
// because machines are noisy.
func TestDownloadMaxBandwidth(t *testing.T) {
	t.Parallel()
	body := payload(2 << 20)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	f := dest(t)
	start := time.Now()
	res, err := fetch.NewRegistry().Download(t.Context(), srv.URL, f, fetch.Options{MaxBandwidth: 1 << 20, Checksum: sha256Hex(body)})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed < 1500*time.Millisecond || elapsed > 4*time.Second {
		t.Errorf("2 MB at 1 MB/s took %s, want 1.5s–4s", elapsed)
	}
	if res.Bytes != int64(len(body)) || !bytes.Equal(contents(t, f), body) {
		t.Error("file differs from the served body")
	}
}

func TestLimitedReaderCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	r := fetch.NewLimitedReader(ctx, bytes.NewReader(payload(1000)), 10) // 100s of data
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("limited reader ignored cancellation")
	}
}

func TestDownloadCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler func(started chan<- struct{}) http.HandlerFunc
	}{
		{"during a slow body", func(started chan<- struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1000000")
				rc := http.NewResponseController(w)
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					if _, err := w.Write(make([]byte, 100)); err != nil {
						return
					}
					rc.Flush()
					if i == 0 {
						close(started)
					}
					select {
					case <-r.Context().Done():
						return
					case <-tick.C:
					}
				}
			}
		}},
		{"during the wait between retries", func(started chan<- struct{}) http.HandlerFunc {
			var once sync.Once
			return func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
				once.Do(func() { close(started) })
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			started := make(chan struct{})
			srv := serve(t, tt.handler(started))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := fetch.NewRegistry().Download(ctx, srv.URL, dest(t), fetch.Options{Retries: 5, RetryWait: time.Minute})
				done <- err
			}()
			select {
			case <-started:
			case err := <-done:
				t.Fatalf("Download returned before the server answered: %v", err)
			}
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("err = %v, want context.Canceled", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Download did not return within 2s of cancel")
			}
		})
	}
}

func TestDownloadFileCancelled(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, payload(1000), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := fetch.NewRegistry().Download(ctx, path, dest(t), fetch.Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestDownloadIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond
	stall := func(c *counter) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c.see(r)
			w.Header().Set("Content-Length", "1000")
			w.Write(make([]byte, 10))
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		}
	}
	tests := []struct {
		name    string
		retries int
	}{
		{"no retries", 0},
		{"one retry", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c counter
			srv := serve(t, stall(&c))
			start := time.Now()
			_, err := fetch.NewRegistry().Download(t.Context(), srv.URL, dest(t), fetch.Options{Retries: tt.retries, IdleTimeout: idle})
			elapsed := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "no data received") {
				t.Fatalf("err = %v, want it to mention no data received", err)
			}
			attempts := time.Duration(tt.retries + 1)
			if elapsed < attempts*idle || elapsed > attempts*5*idle {
				t.Errorf("took %s, want %s–%s", elapsed, attempts*idle, attempts*5*idle)
			}
			if n := c.n(); n != tt.retries+1 {
				t.Errorf("server saw %d requests, want %d", n, tt.retries+1)
			}
		})
	}
}

// Bytes that keep coming, however slowly, are not idle.
func TestDownloadIdleTimeoutTrickle(t *testing.T) {
	t.Parallel()
	body := payload(20 * 100)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		rc := http.NewResponseController(w)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for chunk := range slicesChunk(body, 100) {
			w.Write(chunk)
			rc.Flush()
			<-tick.C
		}
	})
	f := dest(t)
	_, err := fetch.NewRegistry().Download(t.Context(), srv.URL, f, fetch.Options{IdleTimeout: 150 * time.Millisecond, Checksum: sha256Hex(body)})
	if err != nil {
		t.Fatalf("a trickle of 100 bytes every 20ms hit the 150ms idle timeout: %v", err)
	}
}

func slicesChunk(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

func TestDownloadGzipStoredAsServed(t *testing.T) {
	t.Parallel()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte("ferry "), 10_000))
	zw.Close()
	served := gz.Bytes()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(served)
	})
	f := dest(t)
	res, err := fetch.NewRegistry().Download(t.Context(), srv.URL+"/a.tar.gz", f, fetch.Options{Checksum: sha256Hex(served)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(served)) || !bytes.Equal(contents(t, f), served) {
		t.Errorf("stored %d bytes, want the %d gzip bytes as served", res.Bytes, len(served))
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src      string
		scheme   string // "" when an error is wanted
		wantPath string
	}{
		{"/srv/a.tar", "file", "/srv/a.tar"},
		{"relative/a.tar", "file", "relative/a.tar"},
		{"/srv/100%.tar", "file", "/srv/100%.tar"},
		{"file:///srv/a.tar", "file", "/srv/a.tar"},
		{"http://example.com/a.tar", "http", "/a.tar"},
		{"HTTPS://example.com/a.tar", "https", "/a.tar"},
		{"", "", ""},
		{"ftp://example.com/a.tar", "", ""},
		{"s3://bucket/a.tar", "", ""},
	}
	reg := fetch.NewRegistry()
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			u, s, err := reg.Parse(tt.src)
			if tt.scheme == "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want an error", tt.src, u)
				}
				if code := ferry.ErrorCode(err); code != ferry.EINVALID {
					t.Errorf("code = %q, want %q", code, ferry.EINVALID)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != tt.scheme || u.Path != tt.wantPath || s == nil {
				t.Errorf("Parse(%q) = %s %q %v, want %s %q", tt.src, u.Scheme, u.Path, s, tt.scheme, tt.wantPath)
			}
		})
	}
}

func TestDownloadUnsupportedScheme(t *testing.T) {
	t.Parallel()
	_, err := fetch.NewRegistry().Download(t.Context(), "ftp://user:hunter2@example.com/a.tar?sig=s3cret", dest(t), fetch.Options{Retries: 3})
	if err == nil || !strings.Contains(err.Error(), `"ftp"`) {
		t.Fatalf("err = %v, want it to name the ftp scheme", err)
	}
	for _, secret := range []string{"hunter2", "s3cret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("err = %q leaks %s", err, secret)
		}
	}
}

func TestDownloadRedactsURL(t *testing.T) {
	t.Parallel()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	u, _ := url.Parse(srv.URL + "/a.tar?X-Amz-Signature=s3cret")
	u.User = url.UserPassword("deploy", "hunter2")
	_, err := fetch.NewRegistry().Download(t.Context(), u.String(), dest(t), fetch.Options{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, secret := range []string{"hunter2", "s3cret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("err = %q leaks %s", err, secret)
		}
	}
	if !strings.Contains(err.Error(), "/a.tar") {
		t.Errorf("err = %q, want it to name the path", err)
	}
}

// memSource serves fixed bytes, for a scheme a caller plugs in.
type memSource []byte

func (m memSource) Open(_ context.Context, _ *url.URL, offset int64) (io.ReadCloser, bool, error) {
	return io.NopCloser(bytes.NewReader(m[offset:])), true, nil
}

func TestRegistryPluggable(t *testing.T) {
	t.Parallel()
	reg := fetch.NewRegistry()
	reg["mem"] = memSource("plugged in")
	f := dest(t)
	res, err := reg.Download(t.Context(), "mem://bucket/key", f, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if string(contents(t, f)) != "plugged in" || res.SHA256 != sha256Hex([]byte("plugged in")) {
		t.Errorf("got %q", contents(t, f))
	}
}

// statusHook calls seen with the status code before it is written.
type statusHook struct {
	http.ResponseWriter
	seen func(int)
}

func (h statusHook) WriteHeader(code int) {
	h.seen(code)
	h.ResponseWriter.WriteHeader(code)
}

// TestDownloadSplay: downloads started together with a splay reach the
// server spread over it, not at once, and a cancel during the wait ends it.
func TestDownloadSplay(t *testing.T) {
	t.Parallel()
	var c counter
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		c.see(r)
		w.Write([]byte("x"))
	})
	const n, splay = 20, 400 * time.Millisecond
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := fetch.NewRegistry().Download(t.Context(), srv.URL, dest(t), fetch.Options{Splay: splay}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	c.mu.Lock()
	first, last := slices.MinFunc(c.times, time.Time.Compare), slices.MaxFunc(c.times, time.Time.Compare)
	c.mu.Unlock()
	// 20 uniform draws over 400 ms all land within 40 ms of each other
	// with probability below 1e-17.
	if spread := last.Sub(first); spread < splay/10 {
		t.Errorf("%d downloads with a %s splay reached the server within %s", n, splay, spread)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := fetch.NewRegistry().Download(ctx, srv.URL, dest(t), fetch.Options{Splay: time.Hour}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled during the splay: %v", err)
	}
}

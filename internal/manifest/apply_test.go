package manifest

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/install"
	"github.com/ferrydeploy/ferry/internal/artifact"
)

// testArchive is stretcher's test.tar in spirit: foo/baz, bar and an
// exclude.txt listing baz and *.pid.
func testArchive(t *testing.T, extra map[string]string) (path, sha1sum, sha256sum string) {
	t.Helper()
	files := map[string]string{"foo/baz": "baz", "bar": "bar", "exclude.txt": "baz\n*.pid\n"}
	for k, v := range extra {
		files[k] = v
	}
	var es []artifact.Entry
	for n, b := range files {
		es = append(es, artifact.Entry{Name: n, Data: []byte(b)})
	}
	var buf bytes.Buffer
	if err := artifact.Pack(&buf, es, artifact.FormatGzip, time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "test.tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s1 := sha1.Sum(buf.Bytes())
	s256 := sha256.Sum256(buf.Bytes())
	return path, hex.EncodeToString(s1[:]), hex.EncodeToString(s256[:])
}

func mustParse(t *testing.T, yml string) *Manifest {
	t.Helper()
	m, err := Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func apply(t *testing.T, yml string, opt Options) (Result, string, error) {
	t.Helper()
	var log bytes.Buffer
	opt.Output = &log
	if opt.HookDir == "" {
		opt.HookDir = t.TempDir()
	}
	res, err := Apply(context.Background(), mustParse(t, yml), opt)
	return res, log.String(), err
}

func TestDeployRsyncDeletesExtraFiles(t *testing.T) {
	arc, sum, _ := testArchive(t, nil)
	dest := t.TempDir()
	os.WriteFile(filepath.Join(dest, "test.pid"), []byte("1"), 0o644)
	hooks := t.TempDir()
	_, log, err := apply(t, fmt.Sprintf(`
src: file://%s
checksum: %s
dest: %s
commands:
  pre: ["pwd > pre.touch"]
  post: ["echo post > post.touch"]
`, arc, sum, dest), Options{HookDir: hooks})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	for _, p := range []string{filepath.Join(dest, "foo/baz"), filepath.Join(dest, "bar"), filepath.Join(hooks, "pre.touch"), filepath.Join(hooks, "post.touch")} {
		if !exists(p) {
			t.Errorf("%s missing", p)
		}
	}
	if exists(filepath.Join(dest, "test.pid")) {
		t.Error("test.pid must be removed")
	}
}

func TestDeployRsyncKeepsExcluded(t *testing.T) {
	arc, sum, _ := testArchive(t, nil)
	for name, rule := range map[string]string{
		"excludes":     "excludes: [\"*.pid\", baz]",
		"exclude_from": "exclude_from: exclude.txt",
	} {
		t.Run(name, func(t *testing.T) {
			dest := t.TempDir()
			os.WriteFile(filepath.Join(dest, "test.pid"), []byte("1"), 0o644)
			_, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\n%s\n", arc, sum, dest, rule), Options{})
			if err != nil {
				t.Fatalf("%v\n%s", err, log)
			}
			if exists(filepath.Join(dest, "foo/baz")) {
				t.Error("foo/baz must be excluded")
			}
			if !exists(filepath.Join(dest, "bar")) || !exists(filepath.Join(dest, "test.pid")) {
				t.Error("bar must be deployed and test.pid kept")
			}
		})
	}
}

func TestDeployDestMode(t *testing.T) {
	arc, sum, _ := testArchive(t, nil)
	for _, strategy := range []string{StrategyRsync, StrategyMv} {
		t.Run(strategy, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "app")
			os.Mkdir(dest, 0o755)
			os.WriteFile(filepath.Join(dest, "old"), nil, 0o644)
			_, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\ndest_mode: 0751\nsync_strategy: %s\n", arc, sum, dest, strategy), Options{})
			if err != nil {
				t.Fatalf("%v\n%s", err, log)
			}
			fi, err := os.Stat(dest)
			if err != nil || fi.Mode().Perm() != 0o751 {
				t.Fatalf("dest mode %v, %v; want 0751", fi.Mode().Perm(), err)
			}
			if exists(filepath.Join(dest, "old")) || !exists(filepath.Join(dest, "foo/baz")) {
				t.Fatal("dest does not match the archive")
			}
			ents, _ := os.ReadDir(filepath.Dir(dest))
			if len(ents) != 2 { // app and its lock file; no staging left behind
				t.Fatalf("left beside dest: %v", ents)
			}
		})
	}
}

func TestDeployMvIntoMissingDest(t *testing.T) {
	arc, sum, _ := testArchive(t, nil)
	dest := filepath.Join(t.TempDir(), "new", "app")
	if _, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: mv\n", arc, sum, dest), Options{}); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !exists(filepath.Join(dest, "bar")) {
		t.Fatal("mv into a missing dest did not deploy")
	}
}

func TestDeployTimeoutWithThrottledDownload(t *testing.T) {
	arc, sum, _ := testArchive(t, map[string]string{"big": strings.Repeat("x", 1)})
	fi, _ := os.Stat(arc)
	dest := t.TempDir()
	start := time.Now()
	_, _, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\n", arc, sum, dest),
		Options{MaxBandwidth: fi.Size() / 5, Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("expected a timeout, got %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("timeout of 1s took %s", d)
	}
	if exists(filepath.Join(dest, "bar")) {
		t.Fatal("a timed-out apply touched dest")
	}
}

func TestDeployMaxBandwidth(t *testing.T) {
	arc, sum, _ := testArchive(t, map[string]string{"noise": noise(200 << 10)})
	fi, _ := os.Stat(arc)
	start := time.Now()
	_, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\n", arc, sum, t.TempDir()),
		Options{MaxBandwidth: fi.Size() / 2})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	// About 2s expected; the band is wide because CI machines are noisy.
	if d := time.Since(start); d < 1200*time.Millisecond || d > 5*time.Second {
		t.Fatalf("a 2-second transfer took %s", d)
	}
}

// noise is incompressible so the archive size tracks n.
func noise(n int) string {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return string(b)
}

func TestDeployRetriesHTTP(t *testing.T) {
	arc, sum, _ := testArchive(t, nil)
	body, _ := os.ReadFile(arc)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	dest := t.TempDir()
	if _, log, err := apply(t, fmt.Sprintf("src: %s/a.tar.gz\nchecksum: %s\ndest: %s\n", srv.URL, sum, dest), Options{Retries: 3, RetryWait: 10 * time.Millisecond}); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if hits.Load() != 3 || !exists(filepath.Join(dest, "bar")) {
		t.Fatalf("hits %d; want 2 failures then success", hits.Load())
	}
}

func TestFailuresLeaveDestAndRunFailureHooks(t *testing.T) {
	arc, sum, sum256 := testArchive(t, nil)
	good, _ := os.ReadFile(arc)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/404":
			http.NotFound(w, r)
		case "/500":
			http.Error(w, "oops", 500)
		case "/cut":
			w.Header().Set("Content-Length", fmt.Sprint(len(good)))
			w.Write(good[:len(good)/2])
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				c.Close()
			}
		default:
			w.Write(good)
		}
	}))
	defer srv.Close()
	bad := strings.Repeat("0", 40)
	tests := []struct {
		name, yml, want string
	}{
		{"404", "src: " + srv.URL + "/404\nchecksum: " + sum, "404"},
		{"500", "src: " + srv.URL + "/500\nchecksum: " + sum, "500"},
		{"truncated", "src: " + srv.URL + "/cut\nchecksum: " + sum, "EOF"},
		{"checksum", "src: " + srv.URL + "/ok\nchecksum: " + bad, "expected " + bad},
		{"missing file", "src: /no/such/file.tar\nchecksum: " + sum, "no such file"},
		{"pre hook", "src: " + arc + "\nchecksum: " + sum + "\ncommands: {pre: ['exit 7']}", "pre hook"},
		{"release post hook", "src: " + arc + "\nchecksum: " + sum256 + "\nsync_strategy: release\ncommands: {post: ['exit 7']}", "post hook"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := t.TempDir()
			os.WriteFile(filepath.Join(dest, "keep"), []byte("old"), 0o644)
			out := filepath.Join(t.TempDir(), "failure.log")
			yml := fmt.Sprintf("%s\ndest: %s\ncommands_placeholder: x\n", tt.yml, dest)
			yml = strings.Replace(yml, "commands_placeholder: x\n", "", 1)
			if !strings.Contains(yml, "commands:") {
				yml += "commands: {failure: ['cat > " + out + "'], success: ['touch " + out + ".success']}\n"
			} else {
				yml = strings.Replace(yml, "commands: {", "commands: {failure: ['cat > "+out+"'], success: ['touch "+out+".success'], ", 1)
			}
			_, _, err := apply(t, yml, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
			ents, _ := os.ReadDir(dest)
			var names []string
			for _, e := range ents {
				if e.Name() != ".ferry" && e.Name() != "releases" {
					names = append(names, e.Name())
				}
			}
			if strings.Join(names, ",") != "keep" {
				t.Fatalf("dest changed: %v", names)
			}
			if rel, _ := os.ReadDir(filepath.Join(dest, "releases")); len(rel) != 0 {
				t.Fatalf("a failed release was left in releases/: %v", rel)
			}
			log, err := os.ReadFile(out)
			if err != nil || !strings.Contains(string(log), "apply failed") {
				t.Fatalf("failure hook did not get the log on stdin: %q %v", log, err)
			}
			if exists(out + ".success") {
				t.Fatal("success hook ran after a failure")
			}
		})
	}
}

func TestSuccessHookGetsLog(t *testing.T) {
	arc, sum, _ := testArchive(t, nil)
	out := filepath.Join(t.TempDir(), "success.log")
	_, _, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\ncommands: {success: ['cat > %s']}\n", arc, sum, t.TempDir(), out), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "apply succeeded") || !strings.Contains(string(b), "checksum=ok") {
		t.Fatalf("success hook stdin = %q", b)
	}
}

func TestApplyCancel(t *testing.T) {
	arc, sum, _ := testArchive(t, map[string]string{"noise": noise(100 << 10)})
	dest := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := Apply(ctx, mustParse(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\n", arc, sum, dest)), Options{MaxBandwidth: 10 << 10, Output: io.Discard})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancel took %s", d)
	}
	if exists(filepath.Join(dest, "bar")) {
		t.Fatal("cancelled apply touched dest")
	}
}

func TestReleaseStrategy(t *testing.T) {
	dest := t.TempDir()
	var ids []string
	for i := 0; i < 4; i++ {
		arc, _, sum := testArchive(t, map[string]string{"version": fmt.Sprint(i)})
		res, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\nkeep_releases: 3\nshared: [log/]\ncommands: {post: ['test -f version && test \"$FERRY_RELEASE\" = \"$(basename $PWD)\"']}\n", arc, sum, dest), Options{})
		if err != nil {
			t.Fatalf("%v\n%s", err, log)
		}
		ids = append(ids, res.Release)
		b, _ := os.ReadFile(filepath.Join(dest, "current", "version"))
		if string(b) != fmt.Sprint(i) {
			t.Fatalf("current/version = %q after apply %d", b, i)
		}
	}
	if ids[3] != "v4-"+ids[3][3:] {
		t.Fatalf("ids %v", ids)
	}
	d := install.Dir{Path: dest}
	rs, _ := d.Releases()
	if len(rs) != 3 {
		t.Fatalf("keep_releases 3 left %d releases", len(rs))
	}
	if prev, _ := d.Previous(); prev != ids[2] {
		t.Fatalf("previous = %s, want %s", prev, ids[2])
	}
	// Re-applying the current artifact does nothing.
	arc, _, sum := testArchive(t, map[string]string{"version": "3"})
	res, _, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", arc, sum, dest), Options{})
	if err != nil || !res.Skipped || res.Release != ids[3] {
		t.Fatalf("re-apply: %+v %v", res, err)
	}
	// Re-applying an older, still installed artifact switches back without downloading.
	arc, _, sum = testArchive(t, map[string]string{"version": "2"})
	os.Remove(arc)
	res, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", arc, sum, dest), Options{})
	if err != nil || res.Release != ids[2] {
		t.Fatalf("switch back: %+v %v\n%s", res, err, log)
	}
}

func TestLockedDestExits3(t *testing.T) {
	arc, _, sum := testArchive(t, nil)
	dest := t.TempDir()
	unlock, err := install.Dir{Path: dest}.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, _, err = apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", arc, sum, dest), Options{})
	if ferry.ErrorCode(err) != ferry.ELOCKED {
		t.Fatalf("err %v, want locked", err)
	}
}

// With a sha256 checksum and no pre hook the release strategy unpacks while
// it fetches. Bytes that turn out wrong at the end, or a body cut short,
// must leave no release behind and current as it was.
func TestReleaseStreamingFailuresLeaveCurrent(t *testing.T) {
	dest := t.TempDir()
	arcA, _, sumA := testArchive(t, map[string]string{"version": "A"})
	if _, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", arcA, sumA, dest), Options{}); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	d := install.Dir{Path: dest}
	curA, _ := d.Current()

	arcB, _, sumB := testArchive(t, map[string]string{"version": "B", "big": noise(1 << 20)})
	good, _ := os.ReadFile(arcB)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cut" {
			w.Header().Set("Content-Length", fmt.Sprint(len(good)))
			w.Write(good[:len(good)-100]) // the tar is complete; the stream is not
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				c.Close()
			}
			return
		}
		w.Write(good)
	}))
	defer srv.Close()
	tests := []struct{ name, src, sum, want string }{
		{"checksum mismatch", srv.URL + "/ok", sumA, "checksum mismatch"},
		{"checksum mismatch from a file", arcB, sumA, "checksum mismatch"},
		{"truncated", srv.URL + "/cut", sumB, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// sumA is installed: use a checksum no release has.
			sum := tt.sum
			if sum == sumA {
				sum = strings.Repeat("ab", 32)
			}
			_, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", tt.src, sum, dest), Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q\n%s", err, tt.want, log)
			}
			if !strings.Contains(log, "fetching and unpacking") {
				t.Fatalf("did not stream:\n%s", log)
			}
			if cur, _ := d.Current(); cur != curA {
				t.Fatalf("current = %s, want %s", cur, curA)
			}
			ents, _ := os.ReadDir(filepath.Join(dest, "releases"))
			if len(ents) != 1 || ents[0].Name() != curA {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Fatalf("releases/ = %v, want only %s", names, curA)
			}
			if b, _ := os.ReadFile(filepath.Join(dest, "current", "version")); string(b) != "A" {
				t.Fatalf("current/version = %q", b)
			}
		})
	}
	// And the same artifact, whole, installs, sharing the unchanged files.
	res, log, err := apply(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", srv.URL+"/ok", sumB, dest), Options{})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	fa, _ := os.Stat(filepath.Join(d.ReleasePath(curA), "bar"))
	fb, _ := os.Stat(filepath.Join(d.ReleasePath(res.Release), "bar"))
	if !os.SameFile(fa, fb) {
		t.Error("bar is unchanged but was not hard-linked from the previous release")
	}
	fa, _ = os.Stat(filepath.Join(d.ReleasePath(curA), "version"))
	fb, _ = os.Stat(filepath.Join(d.ReleasePath(res.Release), "version"))
	if os.SameFile(fa, fb) {
		t.Error("version changed but shares the previous release's inode")
	}
}

// Cancelling while the release strategy streams stops at once, whatever
// goroutine is waiting on what, and leaves no release.
func TestApplyCancelWhileStreaming(t *testing.T) {
	arc, _, sum := testArchive(t, map[string]string{"noise": noise(100 << 10)})
	dest := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	var log bytes.Buffer
	_, err := Apply(ctx, mustParse(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", arc, sum, dest)), Options{MaxBandwidth: 10 << 10, Output: &log})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled\n%s", err, log.String())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancel took %s", d)
	}
	if !strings.Contains(log.String(), "fetching and unpacking") {
		t.Fatalf("did not stream:\n%s", log.String())
	}
	if rel, _ := os.ReadDir(filepath.Join(dest, "releases")); len(rel) != 0 || exists(filepath.Join(dest, "current")) {
		t.Fatalf("a cancelled apply left releases %v or current", rel)
	}
}

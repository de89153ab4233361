package artifact

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func gitRun(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t",
		"GIT_AUTHOR_DATE=2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// readMeta unpacks an artifact and returns its meta and file list.
func readMeta(t *testing.T, path string) (ferry.Meta, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dst := t.TempDir()
	if _, err := Unpack(context.Background(), f, dst, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	var m ferry.Meta
	b, err := os.ReadFile(filepath.Join(dst, ferry.MetaPath))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var names []string
	filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(dst, p)
		if !fi.IsDir() {
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	return m, names
}

func TestBuildGoAppIsReproducible(t *testing.T) {
	testenv.NeedCommand(t, "git")
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"go.mod":           "module example.com/tiny\n\ngo 1.22\n",
		"cmd/tiny/main.go": "package main\n\nfunc main() { println(\"tiny\") }\n",
		"ferry.yaml":       "app: tiny\nbuild: {go: ./cmd/tiny}\ninclude: [static/]\nexclude: [\"*.tmp\"]\nprocesses:\n  web: {command: bin/tiny, port: 8080}\n  worker: {command: bin/tiny work}\n",
		"static/a.txt":     "a",
		"static/skip.tmp":  "no",
		"notincluded.txt":  "no",
		".gitignore":       "dist/\n",
	})
	gitRun(t, dir, "init", "-q")
	gitRun(t, dir, "add", "-A")
	gitRun(t, dir, "commit", "-qm", "one")
	gitRun(t, dir, "tag", "v1.0.0")

	ctx := context.Background()
	r1, err := Build(ctx, dir, BuildOptions{Output: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "dist", "tiny-v1.0.0-linux-amd64.tar.zst"); r1.Path != want {
		t.Fatalf("path %s, want %s", r1.Path, want)
	}
	sidecar, err := os.ReadFile(r1.Path + ".sha256")
	if err != nil || string(sidecar) != r1.SHA256+"  tiny-v1.0.0-linux-amd64.tar.zst\n" {
		t.Fatalf("sha256 file = %q, %v", sidecar, err)
	}
	sum, size, _ := FileSHA256(r1.Path)
	if sum != r1.SHA256 || size != r1.Size {
		t.Fatalf("reported %s/%d, file is %s/%d", r1.SHA256, r1.Size, sum, size)
	}
	os.Rename(r1.Path, r1.Path+".first")
	r2, err := Build(ctx, dir, BuildOptions{Output: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if r1.SHA256 != r2.SHA256 {
		t.Fatalf("two builds of the same commit differ: %s vs %s", r1.SHA256, r2.SHA256)
	}

	meta, names := readMeta(t, r1.Path+".first")
	if meta.App != "tiny" || meta.Version != "v1.0.0" || meta.Dirty || len(meta.Commit) != 40 ||
		meta.OS != "linux" || meta.Arch != "amd64" || !strings.HasPrefix(meta.GoVersion, "go") ||
		strings.Join(meta.Processes, ",") != "web,worker" || meta.Built.Unix() != 1767323045 {
		t.Fatalf("meta = %+v", meta)
	}
	if got := strings.Join(names, ","); got != ".ferry/meta.json,bin/tiny,ferry.yaml,static/a.txt" {
		t.Fatalf("files = %s", got)
	}

	// A change makes the tree dirty; the version says so.
	writeFiles(t, dir, map[string]string{"static/a.txt": "changed"})
	r3, err := Build(ctx, dir, BuildOptions{Output: io.Discard, Arch: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	meta, _ = readMeta(t, r3.Path)
	if meta.Version != "v1.0.0-dirty" || !meta.Dirty || meta.Arch != "arm64" {
		t.Fatalf("dirty build meta = %+v", meta)
	}
}

func TestBuildCommandApp(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"ferry.yaml": "app: site\nbuild: {command: 'mkdir -p out && echo built-$FERRY_VERSION > out/index.html'}\ninclude: [out/]\n",
		"Procfile":   "web: python3 -m http.server $PORT\n",
	})
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	res, err := Build(context.Background(), dir, BuildOptions{Output: io.Discard, Version: "1.2.3", Format: FormatGzip})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(res.Path, "site-1.2.3-linux-amd64.tar.gz") {
		t.Fatalf("path %s", res.Path)
	}
	meta, names := readMeta(t, res.Path)
	if got := strings.Join(names, ","); got != ".ferry/meta.json,Procfile,ferry.yaml,out/index.html" {
		t.Fatalf("files = %s", got)
	}
	if meta.Built.Unix() != 1700000000 || strings.Join(meta.Processes, ",") != "web" {
		t.Fatalf("meta = %+v", meta)
	}
}

func TestBuildErrorsSayWhatToFix(t *testing.T) {
	tests := []struct {
		files map[string]string
		opt   BuildOptions
		want  string
	}{
		{map[string]string{}, BuildOptions{}, "no ferry.yaml"},
		{map[string]string{"ferry.yaml": "app: Bad Name\n"}, BuildOptions{}, "not a valid app name"},
		{map[string]string{"ferry.yaml": "app: a\nbuidl: {}\n"}, BuildOptions{}, "unknown field"},
		{map[string]string{"ferry.yaml": "app: a\nbuild: {command: 'exit 3'}\n"}, BuildOptions{}, "failed"},
		{map[string]string{"ferry.yaml": "app: a\ninclude: [missing/]\n"}, BuildOptions{}, "matches nothing"},
		{map[string]string{"ferry.yaml": "app: a\ninclude: [../x]\n"}, BuildOptions{}, "inside the app"},
		{map[string]string{"ferry.yaml": "app: a\n"}, BuildOptions{Version: "bad version"}, "version"},
		{map[string]string{"ferry.yaml": "app: a\n"}, BuildOptions{Format: "zip"}, "format"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		writeFiles(t, dir, tt.files)
		tt.opt.Output = io.Discard
		_, err := Build(context.Background(), dir, tt.opt)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("files %v: error %v, want it to mention %q", tt.files, err, tt.want)
		}
		if ferry.ErrorCode(err) != ferry.EINVALID {
			t.Errorf("files %v: error kind %q, want invalid", tt.files, ferry.ErrorCode(err))
		}
	}
}

// TestBuildTargetsSideBySide: a build of one version for two targets makes
// two artifacts, named by their target, not one overwriting the other.
func TestBuildTargetsSideBySide(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte("app: site\nbuild:\n  command: \"true\"\ninclude: [index.html]\nprocesses:\n  web:\n    command: \"true\"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("hi"), 0o644)
	var paths []string
	for _, arch := range []string{"amd64", "arm64"} {
		res, err := Build(context.Background(), dir, BuildOptions{Version: "1.0.0", Arch: arch, Output: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		if meta, _ := readMeta(t, res.Path); meta.Arch != arch {
			t.Errorf("%s: meta says %s", res.Path, meta.Arch)
		}
		paths = append(paths, res.Path)
	}
	if paths[0] == paths[1] {
		t.Fatalf("both targets built to %s", paths[0])
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

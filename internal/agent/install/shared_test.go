package install

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/artifact"
)

// rawArchive packs headers as given (symlinks and all), which Pack's
// entries from files on disk would not let a test write.
func rawArchive(t *testing.T, hs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func file(name string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}
}

func link(name, target string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}
}

// TestSharedNeverLeavesTheRelease: linkShared removes what the artifact
// holds at each shared: path and creates the link's parents; through a
// symlink in the release (the artifact's, or a shared: entry linked just
// before) or in shared/ (which the running app writes), that removed or
// created directories outside. Each case has a directory outside that
// the install must leave alone, all under the test's temp dir.
func TestSharedNeverLeavesTheRelease(t *testing.T) {
	tests := []struct {
		name string
		// setup runs after a first release (v1, shared: data/) is
		// installed and active; jail holds app/ (d.Path) and outside/.
		setup   func(t *testing.T, d Dir, jail string)
		archive []*tar.Header
		shared  []string
		want    string // in the error
		intact  string // relative to jail: must still hold its file
		absent  string // relative to jail: must not have been created
	}{
		{
			name: "chain of links in the artifact, then a shared: path through it",
			// p/q/x leads to the release, b three levels above it: jail.
			archive: []*tar.Header{link("p/q/x", "../.."), link("b", "p/q/x/../../.."), file("f")},
			shared:  []string{"b/outside/victim"},
			want:    "outside the release",
			intact:  "outside/victim",
		},
		{
			name:    "the same, creating a directory outside",
			archive: []*tar.Header{link("p/q/x", "../.."), link("b", "p/q/x/../../.."), file("f")},
			shared:  []string{"b/created/dir"},
			want:    "outside the release",
			absent:  "created",
		},
		{
			name:    "a shared: entry inside one shared before it",
			archive: []*tar.Header{file("data/cache/x")},
			shared:  []string{"data/", "data/cache/"},
			want:    `shared: "data/cache" is inside "data", which is shared already`,
			intact:  "app/shared/data/cache",
		},
		{
			name:    "a shared: entry holding one shared before it",
			archive: []*tar.Header{file("data/cache/x")},
			shared:  []string{"data/cache/", "data/"},
			want:    `shared: "data" holds "data/cache", which is shared already`,
			intact:  "app/shared/data/cache",
		},
		{
			name:    "through an artifact link to a shared directory",
			archive: []*tar.Header{link("up", "data/.."), file("f")},
			shared:  []string{"data/", "up/data/cache"},
			want:    `shared: "up/data/cache": up is a symlink in the release`,
			intact:  "app/shared/data/cache",
		},
		{
			name: "through a symlink the app made in shared/",
			setup: func(t *testing.T, d Dir, jail string) {
				if err := os.Symlink(filepath.Join(jail, "outside"), filepath.Join(d.Path, SharedDir, "data", "sub")); err != nil {
					t.Fatal(err)
				}
			},
			archive: []*tar.Header{file("f")},
			shared:  []string{"data/sub/new"},
			want:    `shared: "data/sub/new": data/sub is a symlink in shared/`,
			absent:  "outside/new",
		},
		{
			name: "a shared directory the app replaced with a symlink",
			setup: func(t *testing.T, d Dir, jail string) {
				os.MkdirAll(filepath.Join(d.Path, SharedDir, "logs"), 0o755)
				if err := os.Symlink(filepath.Join(jail, "outside"), filepath.Join(d.Path, SharedDir, "logs", "app")); err != nil {
					t.Fatal(err)
				}
			},
			archive: []*tar.Header{file("f")},
			shared:  []string{"logs/app"},
			want:    `shared: "logs/app": logs/app is a symlink in shared/`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jail := t.TempDir()
			d := Dir{Path: filepath.Join(jail, "app")}
			for _, p := range []string{"outside/victim/file", "app/shared/data/cache/file"} {
				os.MkdirAll(filepath.Join(jail, filepath.Dir(p)), 0o755)
				os.WriteFile(filepath.Join(jail, p), []byte("keep"), 0o644)
			}
			v1 := fmt.Sprintf("%064d", 1)
			if err := d.Install(context.Background(), "v1", v1, bytes.NewReader(rawArchive(t, file("f"))), Options{Limits: artifact.DefaultLimits, Shared: []string{"data/"}}); err != nil {
				t.Fatal(err)
			}
			if err := d.Activate("v1"); err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(t, d, jail)
			}
			err := d.Install(context.Background(), "v2", fmt.Sprintf("%064d", 2), bytes.NewReader(rawArchive(t, tt.archive...)), Options{Limits: artifact.DefaultLimits, Shared: tt.shared})
			if tt.intact != "" {
				if b, rerr := os.ReadFile(filepath.Join(jail, tt.intact, "file")); rerr != nil || string(b) != "keep" {
					t.Errorf("%s was removed or replaced by the install (%v)", tt.intact, rerr)
				}
			}
			if tt.absent != "" {
				if _, serr := os.Lstat(filepath.Join(jail, tt.absent)); serr == nil {
					t.Errorf("the install created %s", tt.absent)
				}
			}
			if err == nil {
				t.Fatal("installed")
			}
			t.Log(err)
			if ferry.ErrorCode(err) != ferry.EINVALID || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q: want EINVALID saying %q", err, tt.want)
			}
			if _, err := os.Lstat(d.ReleasePath("v2")); err == nil {
				t.Fatal("the refused release was installed")
			}
		})
	}
}

// TestSharedLinkReplacesArtifactLink: an artifact's own symlink at a
// shared: path is replaced like a directory would be, and a link to a
// shared directory from elsewhere in the artifact is fine.
func TestSharedLinkReplacesArtifactLink(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	arc := rawArchive(t, file("d/f"), link("log", "d"), link("current-log", "log/app.log"))
	if err := d.Install(context.Background(), "v1", fmt.Sprintf("%064d", 1), bytes.NewReader(arc), Options{Limits: artifact.DefaultLimits, Shared: []string{"log/"}}); err != nil {
		t.Fatal(err)
	}
	rel := d.ReleasePath("v1")
	if got, _ := os.Readlink(filepath.Join(rel, "log")); got != "../../shared/log" {
		t.Fatalf("log -> %q, want the shared directory", got)
	}
	if _, err := os.Stat(filepath.Join(rel, "d", "f")); err != nil {
		t.Fatalf("replacing the link removed what it pointed at: %v", err)
	}
	os.WriteFile(filepath.Join(d.Path, SharedDir, "log", "app.log"), []byte("hi"), 0o644)
	if b, err := os.ReadFile(filepath.Join(rel, "current-log")); err != nil || string(b) != "hi" {
		t.Fatalf("current-log does not reach shared/log/app.log: %q %v", b, err)
	}
}

// TestModesAreNotWorldReadable: an app's releases may hold secrets (a
// .env, keys, config), so no one but the agent's user and group reads
// them; the group is how an app running as another user will.
func TestModesAreNotWorldReadable(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	ids := installN(t, d, 1)
	rel := d.ReleasePath(ids[0])
	want := map[string]fs.FileMode{
		filepath.Join(d.Path, ReleasesDir):          0o750,
		rel:                                         0o550,
		filepath.Join(d.Path, SharedDir):            0o750,
		filepath.Join(d.Path, SharedDir, "log"):     0o750,
		filepath.Join(d.Path, stateDir):             0o750,
		filepath.Join(d.Path, stateDir, "releases"): 0o750,
		d.recordPath(ids[0]):                        0o640,
		filepath.Join(d.Path, stateDir, "lock"):     0o640,
	}
	unlock, err := d.Lock()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	for p, m := range want {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode().Perm() != m {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), m)
		}
	}
	filepath.WalkDir(rel, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			if fi, _ := e.Info(); fi.Mode().Perm() != 0o550 {
				t.Errorf("%s: mode %v, want 0550", p, fi.Mode().Perm())
			}
		}
		return nil
	})
	// An app directory made by an older agent is tightened by the next install.
	os.Chmod(filepath.Join(d.Path, ReleasesDir), 0o755)
	installN(t, d, 1)
	if fi, _ := os.Stat(filepath.Join(d.Path, ReleasesDir)); fi.Mode().Perm() != 0o750 {
		t.Errorf("releases/ left at %v after an install", fi.Mode().Perm())
	}
}

// TestRetentionStaysInReleases: Releases lists what is in releases/ under
// its directory's name, whatever a record says, so retention cannot be
// sent elsewhere by one.
func TestRetentionStaysInReleases(t *testing.T) {
	jail := t.TempDir()
	d := Dir{Path: filepath.Join(jail, "app")}
	ids := installN(t, d, 3)
	victim := filepath.Join(jail, "victim")
	os.MkdirAll(victim, 0o755)
	os.WriteFile(filepath.Join(victim, "file"), []byte("keep"), 0o644)
	rec := `{"id":"../../victim","sha256":"x","installed":"2000-01-01T00:00:00Z"}`
	if err := os.WriteFile(d.recordPath(ids[0]), []byte(rec), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Prune(2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(victim, "file")); err != nil {
		t.Fatalf("retention removed a directory outside releases/: %v", err)
	}
	if _, err := os.Stat(d.ReleasePath(ids[0])); err == nil {
		t.Fatalf("%s, the oldest, was kept", ids[0])
	}
	if err := d.Remove("../../victim"); ferry.ErrorCode(err) != ferry.EINVALID {
		t.Fatalf("Remove of a path: %v, want EINVALID", err)
	}
}

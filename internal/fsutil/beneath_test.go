//go:build unix

package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// tree builds root/<name> from specs: "d/" a directory, "l -> target" a
// symlink, anything else a file; parents are created as needed.
func tree(t *testing.T, root string, specs ...string) {
	t.Helper()
	for _, s := range specs {
		name, target, link := strings.Cut(s, " -> ")
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case link:
			err = os.Symlink(target, p)
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		default:
			err = os.WriteFile(p, []byte(name), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// both runs f with openat2 (when the kernel has it) and with the walk.
func both(t *testing.T, f func(t *testing.T)) {
	if probeOpenat2() {
		t.Run("openat2", f)
	} else {
		t.Log("no openat2 here: testing the walk only")
	}
	t.Run("walk", func(t *testing.T) {
		noOpenat2 = true
		defer func() { noOpenat2 = false }()
		f(t)
	})
}

func openRoot(t *testing.T) (string, int) {
	t.Helper()
	jail := t.TempDir()
	root := filepath.Join(jail, "root")
	tree(t, jail, "root/", "outside/", "outside/secret")
	fd, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return root, fd
}

func TestResolveBeneath(t *testing.T) {
	tests := []struct {
		name  string
		specs []string
		path  string
		want  error // nil, ErrOutside or an errno
	}{
		{"plain file", []string{"a/b/f"}, "a/b/f", nil},
		{"link inside", []string{"d/f", "l -> d/f"}, "l", nil},
		{"link up to the root", []string{"a/x -> .."}, "a/x", nil},
		{"dotdot after a link to the root", []string{"a/x -> ..", "b -> a/x/.."}, "b", ErrOutside},
		{"several levels", []string{"p/q/r/x -> ../../..", "y -> p/q/r/x/../../../.."}, "y", ErrOutside},
		{"link to a link that points up", []string{"a/up -> ..", "link -> a/up", "b -> link/.."}, "b", ErrOutside},
		{"chain down and back", []string{"bin/app", "a/x -> ..", "c/d/e -> ../../a/x", "c/f -> ../c/d/e/bin/app"}, "c/f", nil},
		{"absolute", []string{"l -> /etc"}, "l", ErrOutside},
		{"absolute deep in a chain", []string{"a -> b", "b -> c/x", "c/x -> /etc"}, "a", ErrOutside},
		{"dotdot of the root", nil, "..", ErrOutside},
		{"out and back in by name", []string{"f"}, "../root/f", ErrOutside},
		{"dangling", []string{"l -> nowhere/.."}, "l", unix.ENOENT},
		{"through a file", []string{"f", "l -> f/.."}, "l", unix.ENOTDIR},
		{"loop", []string{"l1 -> l2", "l2 -> l1"}, "l1", unix.ELOOP},
		{"escape before the dangling part", []string{"a/x -> ..", "b -> a/x/../nowhere"}, "b", ErrOutside},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			both(t, func(t *testing.T) {
				root, fd := openRoot(t)
				tree(t, root, tt.specs...)
				err := ResolveBeneath(fd, tt.path)
				if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
					t.Fatalf("ResolveBeneath(%q) = %v, want %v", tt.path, err, tt.want)
				}
			})
		})
	}
}

func TestOpenDirBeneath(t *testing.T) {
	tests := []struct {
		name  string
		specs []string
		path  string
		want  error
	}{
		{"directory", []string{"a/b/"}, "a/b", nil},
		{"the root", nil, ".", nil},
		{"through a link inside", []string{"d/e/", "l -> d"}, "l/e", unix.ELOOP},
		{"a link to a directory inside", []string{"d/", "l -> d"}, "l", unix.ELOOP},
		{"through a link to the root", []string{"a/x -> ..", "d/"}, "a/x/d", unix.ELOOP},
		{"dotdot", []string{"a/"}, "a/../..", ErrOutside},
		{"a file", []string{"f"}, "f", unix.ENOTDIR},
		{"missing", nil, "nope", unix.ENOENT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			both(t, func(t *testing.T) {
				root, fd := openRoot(t)
				tree(t, root, tt.specs...)
				dfd, err := OpenDirBeneath(fd, tt.path)
				if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
					t.Fatalf("OpenDirBeneath(%q) = %v, want %v", tt.path, err, tt.want)
				}
				if err != nil {
					return
				}
				defer unix.Close(dfd)
				// The descriptor is the directory: create in it, find it there.
				if err := unix.Mkdirat(dfd, "new", 0o755); err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(filepath.Join(root, tt.path, "new")); err != nil || !fi.IsDir() {
					t.Fatalf("mkdirat in the descriptor did not land in %s: %v", tt.path, err)
				}
			})
		})
	}
}

// TestTreeHelpersDoNotFollowSymlinks: a tree holding symlinks to a
// directory outside it (as a release holds its shared directories) is
// locked and removed without the outside directory changing.
func TestTreeHelpersDoNotFollowSymlinks(t *testing.T) {
	jail := t.TempDir()
	tree(t, jail, "outside/keep/", "outside/keep/f", "rel/d/e/f", "rel/d/up -> ../../outside", "rel/abs -> "+filepath.Join(jail, "outside"), "rel/file-link -> ../outside/keep/f")
	outside := filepath.Join(jail, "outside")
	if err := os.Chmod(filepath.Join(outside, "keep"), 0o700); err != nil {
		t.Fatal(err)
	}
	rel := filepath.Join(jail, "rel")
	if err := ChmodDirs(rel, 0o550); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"rel", "rel/d", "rel/d/e"} {
		if fi, _ := os.Stat(filepath.Join(jail, d)); fi.Mode().Perm() != 0o550 {
			t.Errorf("%s: mode %v, want 0550", d, fi.Mode().Perm())
		}
	}
	for _, d := range []string{"outside", "outside/keep"} {
		fi, _ := os.Stat(filepath.Join(jail, d))
		if want := map[string]os.FileMode{"outside": 0o755, "outside/keep": 0o700}[d]; fi.Mode().Perm() != want {
			t.Errorf("ChmodDirs followed a symlink: %s is %v, want %v", d, fi.Mode().Perm(), want)
		}
	}
	if err := RemoveTree(rel); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(rel); !os.IsNotExist(err) {
		t.Fatalf("rel still there: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "keep", "f")); err != nil || string(b) != "outside/keep/f" {
		t.Fatalf("RemoveTree followed a symlink out: %q %v", b, err)
	}
	if fi, _ := os.Stat(filepath.Join(outside, "keep")); fi.Mode().Perm() != 0o700 {
		t.Errorf("RemoveTree changed outside/keep's mode to %v", fi.Mode().Perm())
	}
	if err := RemoveTree(rel); err != nil {
		t.Fatalf("removing a missing tree: %v", err)
	}
}

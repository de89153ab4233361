package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func symlink(name, target string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}
}

// resolvesOutside follows the symlink at rel under root the way the kernel
// would, component by component with Lstat and Readlink, and reports
// whether the walk ever leaves root (and where it was then). A component
// that does not exist ends the walk inside. It is written here, apart from
// the code under test, so the tests do not take Unpack's word for it.
func resolvesOutside(t testing.TB, root, rel string) (string, bool) {
	t.Helper()
	root, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	cur := root
	todo := strings.Split(filepath.ToSlash(rel), "/")
	for links := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			if cur != root && !strings.HasPrefix(cur, root+string(filepath.Separator)) {
				return cur, true
			}
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return next, false
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return next, false // a loop leads nowhere
		}
		target, err := os.Readlink(next)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.IsAbs(target) {
			return target, true
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, false
}

// TestUnpackRejectsSymlinkChains: each archive's symlinks all stay inside
// when read as text (path.Join of the link's directory and its target),
// which is all the unpack used to check, yet one of them resolves outside
// the release on disk, because a `..` after a symlink climbs from where
// that symlink points, not from where its name is.
func TestUnpackRejectsSymlinkChains(t *testing.T) {
	tests := []struct {
		name    string
		entries []*tar.Header
		bad     string // the entry the error must name
	}{
		{"dotdot after a link to the root",
			[]*tar.Header{symlink("a/x", ".."), symlink("b", "a/x/..")}, "b"},
		{"climbs several levels",
			[]*tar.Header{symlink("p/q/r/x", "../../.."), symlink("y", "p/q/r/x/../../../..")}, "y"},
		{"link to a link that points up",
			[]*tar.Header{symlink("a/up", ".."), symlink("link", "a/up"), symlink("b", "link/..")}, "b"},
		{"from a subdirectory",
			[]*tar.Header{symlink("a/up", ".."), symlink("c/d/l", "../../a/up/..")}, "c/d/l"},
		{"the link it goes through comes later",
			[]*tar.Header{symlink("b", "a/x/.."), symlink("a/x", "..")}, "b"},
		{"every link of the chain comes later",
			[]*tar.Header{symlink("b", "up/.."), symlink("up", "d/up"), {Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, symlink("d/up", "..")}, "b"},
		{"through a link to a directory, then further up",
			[]*tar.Header{{Name: "d/e/f/", Typeflag: tar.TypeDir, Mode: 0o755}, symlink("d/e/f/top", "../../.."), symlink("z", "d/e/f/top/../x")}, "z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jail := t.TempDir()
			dst := filepath.Join(jail, "release")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			arc := rawTar(t, append(tt.entries, reg("f"))...)
			// The case must really be one that escapes on disk: unpack it
			// with no checks at all and see.
			raw := filepath.Join(jail, "raw")
			os.Mkdir(raw, 0o755)
			for _, h := range tt.entries {
				p := filepath.Join(raw, filepath.FromSlash(h.Name))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if h.Typeflag == tar.TypeDir {
					os.MkdirAll(p, 0o755)
				} else {
					os.Symlink(h.Linkname, p)
				}
			}
			if where, out := resolvesOutside(t, raw, tt.bad); !out {
				t.Fatalf("test case is wrong: %s resolves inside (to %s)", tt.bad, where)
			}

			_, err := Unpack(context.Background(), bytes.NewReader(arc), dst, DefaultLimits)
			if err == nil {
				t.Fatalf("archive accepted; %s resolves outside the release", tt.bad)
			}
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tt.bad+": ") || !strings.Contains(err.Error(), "outside the release") {
				t.Fatalf("error %q: want ErrUnsafe naming %s and saying it leads outside the release", err, tt.bad)
			}
		})
	}
}

// TestUnpackAcceptsInsideChains: chains that climb no higher than the
// release are fine, as are links that dangle or loop (neither leads
// anywhere).
func TestUnpackAcceptsInsideChains(t *testing.T) {
	dst := t.TempDir()
	arc := rawTar(t,
		reg("bin/app"),
		symlink("a/x", ".."),           // the release itself
		symlink("b", "a/x/bin"),        // through it, down again
		symlink("c/d/e", "../../a/x"),  // a link to that link
		symlink("c/f", "../c/d/e/bin"), // and through both
		symlink("g/h", "../b/app"),
		symlink("dangling", "nowhere/.."),
		symlink("loop1", "loop2"),
		symlink("loop2", "loop1"),
	)
	if _, err := Unpack(context.Background(), bytes.NewReader(arc), dst, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "g/h")); err != nil || string(b) != strings.Repeat("x", len("bin/app")) {
		t.Fatalf("g/h does not resolve to bin/app: %q %v", b, err)
	}
}

// TestUnpackHardLinksStayInside: a hard link names a file by its path in
// the archive; one through a symlink, even one that stays inside, is
// refused, and none may name something outside.
func TestUnpackHardLinksStayInside(t *testing.T) {
	for name, entries := range map[string][]*tar.Header{
		"through a symlink":        {reg("d/f"), symlink("l", "d"), {Name: "h", Typeflag: tar.TypeLink, Linkname: "l/f"}},
		"through a symlink to out": {symlink("a/x", ".."), {Name: "h", Typeflag: tar.TypeLink, Linkname: "a/x/../secret"}},
		"to a symlink":             {reg("f"), symlink("l", "f"), {Name: "h", Typeflag: tar.TypeLink, Linkname: "l"}},
		"to a directory":           {{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "h", Typeflag: tar.TypeLink, Linkname: "d"}},
	} {
		t.Run(name, func(t *testing.T) {
			jail := t.TempDir()
			os.WriteFile(filepath.Join(jail, "secret"), []byte("secret"), 0o600)
			dst := filepath.Join(jail, "release")
			os.Mkdir(dst, 0o755)
			_, err := Unpack(context.Background(), bytes.NewReader(rawTar(t, entries...)), dst, DefaultLimits)
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "hard link") {
				t.Fatalf("error %v: want ErrUnsafe about the hard link", err)
			}
		})
	}
}

package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzUnpack feeds archives, malicious ones among the seeds, to Unpack in
// a jail directory: whether it accepts or refuses them, nothing may appear
// in the jail outside dst, and no symlink under dst may lead out of it
// when followed on disk (resolvesOutside), chains of symlinks included.
func FuzzUnpack(f *testing.F) {
	add := func(hs ...*tar.Header) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hs {
			if h.Typeflag == tar.TypeReg && h.Size == 0 {
				h.Size = int64(len(h.Name))
			}
			tw.WriteHeader(h)
			if h.Typeflag == tar.TypeReg {
				tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		tw.Close()
		f.Add(buf.Bytes())
	}
	add(reg("a"), &tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("d/b"), &tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "b"})
	add(reg("../evil"))
	add(reg("a/../../evil"))
	add(reg("/etc/evil"))
	add(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, reg("l/passwd"))
	add(&tar.Header{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "../../x"})
	add(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d"}, reg("l/f"))
	add(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: ".."}, reg("l/escaped"))
	add(reg("f"), &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "f"})
	add(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../etc/passwd"})
	add(&tar.Header{Name: "p", Typeflag: tar.TypeFifo})
	add(reg("a"), reg("a"))
	add(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 4096})
	// Chains that stay inside as text and leave on disk.
	add(symlink("a/x", ".."), symlink("b", "a/x/.."))
	add(symlink("b", "a/x/.."), symlink("a/x", ".."), reg("f"))
	add(symlink("a/up", ".."), symlink("link", "a/up"), symlink("b", "link/.."), reg("b/escaped"))
	add(symlink("p/q/r/x", "../../.."), symlink("y", "p/q/r/x/../../../.."))
	add(reg("d/f"), symlink("l", "d"), &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "l/f"})
	f.Add([]byte("not a tar at all"))
	lim := Limits{MaxBytes: 1 << 20, MaxFiles: 100}
	f.Fuzz(func(t *testing.T, b []byte) {
		// os.MkdirTemp, not t.TempDir: per exec, TempDir made fuzzing
		// crawl (1 exec/s).
		jail, err := os.MkdirTemp("", "fuzzunpack-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(jail)
		dst := filepath.Join(jail, "release")
		if err = os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Unpack(context.Background(), bytes.NewReader(b), dst, lim)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("Unpack of %d bytes has not returned after 5s", len(b))
		}
		ents, _ := os.ReadDir(jail)
		if len(ents) != 1 || ents[0].Name() != "release" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("the archive wrote outside dst: the jail holds %v", names)
		}
		filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.Type()&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
				t.Fatalf("%s is a device, fifo or socket", p)
			}
			if d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			rel, _ := filepath.Rel(dst, p)
			if where, out := resolvesOutside(t, dst, rel); out {
				target, _ := os.Readlink(p)
				t.Fatalf("symlink %s → %s leads outside dst, to %s", rel, target, where)
			}
			return nil
		})
	})
}

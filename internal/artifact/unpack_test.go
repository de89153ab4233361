package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawTar builds an archive from headers as given, without any of Pack's
// normalisation, so tests can write hostile entries.
func rawTar(t *testing.T, hs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(h.Name))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func reg(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }

func TestUnpackRejectsUnsafeArchives(t *testing.T) {
	tests := []struct {
		name    string
		entries []*tar.Header
		limits  Limits
		want    string
	}{
		{"dotdot", []*tar.Header{reg("../evil")}, DefaultLimits, ".."},
		{"dotdot inside", []*tar.Header{reg("a/../../evil")}, DefaultLimits, ".."},
		{"absolute", []*tar.Header{reg("/etc/evil")}, DefaultLimits, "absolute"},
		{"symlink absolute", []*tar.Header{{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}, DefaultLimits, "outside"},
		{"symlink escape", []*tar.Header{{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "../../x"}}, DefaultLimits, "outside"},
		{"write through symlink", []*tar.Header{{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d"}, reg("l/f")}, DefaultLimits, "through the symlink"},
		{"hard link out", []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../etc/passwd"}}, DefaultLimits, "hard link"},
		{"hard link to unknown", []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "nope"}}, DefaultLimits, "hard link"},
		{"char device", []*tar.Header{{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}, DefaultLimits, "device"},
		{"block device", []*tar.Header{{Name: "dev", Typeflag: tar.TypeBlock}}, DefaultLimits, "device"},
		{"fifo", []*tar.Header{{Name: "p", Typeflag: tar.TypeFifo}}, DefaultLimits, "fifo"},
		{"duplicate", []*tar.Header{reg("a"), reg("a")}, DefaultLimits, "twice"},
		{"too many files", []*tar.Header{reg("a"), reg("b"), reg("c")}, Limits{MaxFiles: 2}, "file count"},
		{"too big", []*tar.Header{{Name: "big", Typeflag: tar.TypeReg, Size: 2048}}, Limits{MaxBytes: 1024}, "total size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dst := filepath.Join(root, "rel")
			os.Mkdir(dst, 0o755)
			_, err := Unpack(context.Background(), bytes.NewReader(rawTar(t, tt.entries...)), dst, tt.limits)
			if err == nil {
				t.Fatal("unsafe archive accepted")
			}
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q: want ErrUnsafe mentioning %q", err, tt.want)
			}
			if _, err := os.Lstat(filepath.Join(root, "evil")); err == nil {
				t.Fatal("a file landed outside the release dir")
			}
		})
	}
}

func TestUnpackAcceptsSafeLinks(t *testing.T) {
	dst := t.TempDir()
	arc := rawTar(t,
		&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		reg("bin/app"),
		&tar.Header{Name: "bin/app-link", Typeflag: tar.TypeSymlink, Linkname: "app"},
		&tar.Header{Name: "lib/x", Typeflag: tar.TypeSymlink, Linkname: "../bin/app"},
		&tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "bin/app"},
	)
	st, err := Unpack(context.Background(), bytes.NewReader(arc), dst, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 5 {
		t.Errorf("Files = %d, want 5", st.Files)
	}
	b, err := os.ReadFile(filepath.Join(dst, "lib/x"))
	if err != nil || string(b) != strings.Repeat("x", len("bin/app")) {
		t.Fatalf("symlink inside the release does not resolve: %v %q", err, b)
	}
}

func TestUnpackRejectsGarbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":         nil,
		"text":          []byte("this is not an archive, just text long enough to be read as a header maybe"),
		"truncated zst": {0x28, 0xb5, 0x2f, 0xfd, 0, 0},
		"truncated gz":  {0x1f, 0x8b, 8, 0},
	} {
		if _, err := Unpack(context.Background(), bytes.NewReader(data), t.TempDir(), DefaultLimits); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPackIsDeterministicAndRoundTrips(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "d/e"), 0o700)
	os.WriteFile(filepath.Join(src, "d/e/f.txt"), []byte("hello"), 0o600)
	os.WriteFile(filepath.Join(src, "run"), []byte("#!/bin/sh\n"), 0o700)
	os.Symlink("d/e/f.txt", filepath.Join(src, "link"))
	var entries []Entry
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		e, err := FileEntry(filepath.ToSlash(rel), p, fi)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
		return nil
	})
	mtime := time.Unix(1700000000, 0)
	for _, format := range []string{FormatZstd, FormatGzip} {
		var a, b bytes.Buffer
		if err := Pack(&a, entries, format, mtime); err != nil {
			t.Fatal(err)
		}
		// Reversed order, different wall clock: same bytes.
		rev := append([]Entry(nil), entries...)
		for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
			rev[i], rev[j] = rev[j], rev[i]
		}
		if err := Pack(&b, rev, format, mtime); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatalf("%s: packing the same files twice gave different bytes", format)
		}
		dst := t.TempDir()
		if _, err := Unpack(context.Background(), &a, dst, DefaultLimits); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(dst, "run"))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: run mode = %v, %v; want normalised 0755", format, fi.Mode(), err)
		}
		fi, _ = os.Stat(filepath.Join(dst, "d/e/f.txt"))
		if fi.Mode().Perm() != 0o644 || !fi.ModTime().Equal(mtime) {
			t.Fatalf("%s: f.txt mode %v mtime %v; want 0644 and %v", format, fi.Mode(), fi.ModTime(), mtime)
		}
		if l, _ := os.Readlink(filepath.Join(dst, "link")); l != "d/e/f.txt" {
			t.Fatalf("%s: link = %q", format, l)
		}
	}
}

// sameFile reports whether a and b are one inode.
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}

func TestUnpackReusesUnchangedFiles(t *testing.T) {
	mtime := time.Unix(1_700_000_000, 0)
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*copyBuf/16+100) // several compare chunks
	bigChanged := bytes.Clone(big)
	bigChanged[len(bigChanged)-1] ^= 1 // differs only in the last chunk
	// newer has the same bytes in both, but a newer mtime in the new one.
	pack := func(files map[string][]byte, mt time.Time, newer time.Duration) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, name := range []string{"same", "changed", "big", "bigchanged", "newer", "s/f", "d/same"} {
			b, ok := files[name]
			if !ok {
				continue
			}
			m := mt
			if name == "newer" {
				m = m.Add(newer)
			}
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: m})
			tw.Write(b)
		}
		tw.Close()
		return buf.Bytes()
	}
	// The earlier release, unpacked read-only as install does; s is a
	// symlink there (a shared directory), a real directory in the new one.
	old := t.TempDir()
	oldFiles := map[string][]byte{"same": []byte("same"), "changed": []byte("old!"), "big": big, "bigchanged": big, "newer": []byte("x"), "d/same": []byte("in d")}
	if _, err := UnpackWith(context.Background(), bytes.NewReader(pack(oldFiles, mtime, 0)), old, UnpackOptions{Limits: DefaultLimits, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	real := t.TempDir()
	os.WriteFile(filepath.Join(real, "f"), []byte("shared"), 0o444)
	os.Chtimes(filepath.Join(real, "f"), mtime, mtime)
	os.Symlink(real, filepath.Join(old, "s"))

	newFiles := map[string][]byte{"same": []byte("same"), "changed": []byte("new!"), "big": big, "bigchanged": bigChanged, "newer": []byte("x"), "s/f": []byte("shared"), "d/same": []byte("in d")}
	dst := t.TempDir()
	st, err := UnpackWith(context.Background(), bytes.NewReader(pack(newFiles, mtime, time.Hour)), dst, UnpackOptions{Limits: DefaultLimits, ReadOnly: true, Reuse: old})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range newFiles {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: content differs from the archive (%d bytes, err %v)", name, len(got), err)
		}
		fi, _ := os.Stat(filepath.Join(dst, name))
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v, want read-only 0444", name, fi.Mode().Perm())
		}
		want := mtime
		if name == "newer" {
			want = mtime.Add(time.Hour)
		}
		if !fi.ModTime().Equal(want) {
			t.Errorf("%s: mtime %v, want %v", name, fi.ModTime(), want)
		}
	}
	for _, name := range []string{"same", "big", "d/same"} {
		if !sameFile(t, filepath.Join(old, name), filepath.Join(dst, name)) {
			t.Errorf("%s is unchanged but was not hard-linked", name)
		}
	}
	for _, name := range []string{"changed", "bigchanged", "newer"} {
		if sameFile(t, filepath.Join(old, name), filepath.Join(dst, name)) {
			t.Errorf("%s changed but shares the old release's inode", name)
		}
	}
	if sameFile(t, filepath.Join(real, "f"), filepath.Join(dst, "s", "f")) {
		t.Error("a file reached through a symlink in the old release was linked")
	}
	// The old release is as it was.
	for name, want := range oldFiles {
		if got, _ := os.ReadFile(filepath.Join(old, name)); !bytes.Equal(got, want) {
			t.Errorf("old release's %s was modified", name)
		}
	}
	if st.Linked != 3 || st.LinkedBytes != int64(4+len(big)+4) {
		t.Errorf("stats = %+v, want 3 files linked", st)
	}
}

package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestUnpackLegacyRegularFiles: archives from tars older than POSIX.1-1988
// mark regular files with type NUL (tar.TypeRegA), and a name ending
// in '/' as a directory. Unpack extracts them as tar.Reader reports them,
// regular files and directories, though it names only tar.TypeReg.
func TestUnpackLegacyRegularFiles(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatUSTAR},
		{Name: "dir/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5, Format: tar.FormatUSTAR},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte("hello")[:h.Size])
	}
	tw.Close()
	// tar.Writer writes TypeRegA as TypeReg or TypeDir: set the old flag
	// in the two headers' bytes (the directory has no data block after
	// it), and their checksums again.
	b := buf.Bytes()
	for _, off := range []int{0, 512} {
		hdr := b[off : off+512]
		hdr[156] = '\x00' // tar.TypeRegA, deprecated for writing
		copy(hdr[148:156], "        ")
		sum := 0
		for _, c := range hdr {
			sum += int(c)
		}
		copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	}
	// Check the archive is what the test means, as tar.Reader reads it.
	tr := tar.NewReader(bytes.NewReader(b))
	for _, want := range []byte{tar.TypeDir, tar.TypeReg} {
		h, err := tr.Next()
		if err != nil || h.Typeflag != want {
			t.Fatalf("legacy archive reads as %+v, %v; want type %q", h, err, want)
		}
	}

	dst := t.TempDir()
	if _, err := Unpack(context.Background(), bytes.NewReader(b), dst, DefaultLimits); err != nil {
		t.Fatalf("Unpack of a legacy archive: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "dir")); err != nil || !fi.IsDir() {
		t.Errorf("dir/: %v, %v; want a directory", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(dst, "dir", "file")); err != nil || string(got) != "hello" {
		t.Errorf("dir/file: %q, %v; want hello", got, err)
	}
}

// Package artifact builds, packs, verifies and safely unpacks ferry
// artifacts: tar archives compressed with zstd (gzip and plain tar are
// accepted when reading) whose name is the sha256 of their bytes.
package artifact

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Formats of a packed artifact.
const (
	FormatZstd = "tar.zst"
	FormatGzip = "tar.gz"
)

// Entry is one file, directory or symlink to pack. Exactly one of Src, Data,
// Link or Dir says where its content comes from.
type Entry struct {
	Name string // slash-separated path inside the archive, no leading ./
	Src  string // a regular file on disk
	Data []byte // literal content
	Link string // symlink target
	Dir  bool
	Exec bool // regular file with the executable bits
}

// PackWindow is the zstd window Pack uses. The decoder must hold a whole
// window in memory, and zstd's default of 8 MiB for inputs over 8 MiB made
// unpacking cost ~12 MiB more RSS than gzip; a 1 MiB window costs ~2 MiB.
// Go binaries compress within 0.3% of the 8 MiB result (measured on
// ferry's and stretcher's own); artifacts of files that repeat each other
// more than 1 MiB apart lose more.
const PackWindow = 1 << 20

// Pack writes entries as a deterministic archive: entries sorted by name,
// owner root, every mtime set to mtime, modes normalised to 0755/0644, so
// the same files always give the same bytes.
func Pack(w io.Writer, entries []Entry, format string, mtime time.Time) error {
	var (
		cw  io.WriteCloser
		err error
	)
	mtime = mtime.UTC().Truncate(time.Second)
	switch format {
	case FormatZstd, "":
		cw, err = zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(PackWindow))
	case FormatGzip:
		gw, gerr := gzip.NewWriterLevel(w, gzip.DefaultCompression)
		gw.ModTime = time.Unix(0, 0) // no wall clock in the header
		cw, err = gw, gerr
	default:
		return fmt.Errorf("pack: unknown format %q (use %s or %s)", format, FormatZstd, FormatGzip)
	}
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	sorted := append([]Entry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	tw := tar.NewWriter(cw)
	for i, e := range sorted {
		if i > 0 && sorted[i-1].Name == e.Name {
			return fmt.Errorf("pack: %s is listed twice", e.Name)
		}
		if err := writeEntry(tw, e, mtime); err != nil {
			return fmt.Errorf("pack: %s: %w", e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	return nil
}

func writeEntry(tw *tar.Writer, e Entry, mtime time.Time) error {
	h := &tar.Header{Name: e.Name, ModTime: mtime, Format: tar.FormatPAX}
	switch {
	case e.Dir:
		h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, strings.TrimSuffix(e.Name, "/")+"/"
		return tw.WriteHeader(h)
	case e.Link != "":
		h.Typeflag, h.Mode, h.Linkname = tar.TypeSymlink, 0o777, e.Link
		return tw.WriteHeader(h)
	}
	h.Typeflag, h.Mode = tar.TypeReg, 0o644
	if e.Exec {
		h.Mode = 0o755
	}
	if e.Src == "" {
		h.Size = int64(len(e.Data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(e.Data)
		return err
	}
	f, err := os.Open(e.Src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	h.Size = fi.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != h.Size {
		err = fmt.Errorf("file changed size while packing")
	}
	return err
}

// FileEntry describes a file on disk for Pack, keeping only what survives
// normalisation: file, dir or symlink, and whether it is executable.
func FileEntry(name, src string, fi fs.FileInfo) (Entry, error) {
	switch {
	case fi.IsDir():
		return Entry{Name: name, Dir: true}, nil
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return Entry{}, err
		}
		return Entry{Name: name, Link: target}, nil
	case fi.Mode().IsRegular():
		return Entry{Name: name, Src: src, Exec: fi.Mode()&0o111 != 0}, nil
	}
	return Entry{}, fmt.Errorf("%s: cannot pack a %s", src, fi.Mode().Type())
}

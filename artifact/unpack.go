package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/ferrydeploy/ferry"
)

// Limits bound what one artifact may unpack to, so a decompression bomb is
// rejected instead of filling the disk.
type Limits struct {
	MaxBytes int64 // total size of regular files
	MaxFiles int   // entries of any kind
}

// DefaultLimits are generous for real apps and small for a bomb.
var DefaultLimits = Limits{MaxBytes: 8 << 30, MaxFiles: 500_000}

// ErrUnsafe is wrapped by every rejection of an archive's content.
var ErrUnsafe = errors.New("unsafe archive")

// Stats says what Unpack wrote.
type Stats struct {
	Files int
	Bytes int64
}

var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// Decompress returns the tar stream inside r, which may be zstd, gzip or
// plain tar, told apart by their magic bytes.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, zstdMagic):
		d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case bytes.HasPrefix(head, gzipMagic):
		return gzip.NewReader(br)
	}
	return io.NopCloser(br), nil
}

// Unpack extracts the archive read from r into dst, an empty directory.
// Any entry that could land outside dst (absolute or .. paths, symlinks or
// hard links that point out, paths through a symlink), any device node or
// fifo, a duplicate, or exceeding lim rejects the whole archive with an
// error wrapping ErrUnsafe; the caller then removes dst. It never follows a
// symlink while writing.
func Unpack(ctx context.Context, r io.Reader, dst string, lim Limits) (Stats, error) {
	var st Stats
	dr, err := Decompress(r)
	if err != nil {
		return st, fmt.Errorf("unpack: %w", err)
	}
	defer dr.Close()
	u := &unpacker{dst: dst, lim: lim, links: map[string]bool{}, files: map[string]bool{}, dirs: map[string]bool{".": true}}
	tr := tar.NewReader(dr)
	for {
		if err := ctx.Err(); err != nil {
			return u.st, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return u.st, fmt.Errorf("unpack: reading archive: %w", err)
		}
		if err := u.entry(h, tr); err != nil {
			return u.st, fmt.Errorf("unpack: %s: %w", h.Name, err)
		}
	}
	if u.st.Files == 0 {
		return u.st, fmt.Errorf("unpack: the archive is empty or not a tar archive")
	}
	return u.st, nil
}

type unpacker struct {
	dst   string
	lim   Limits
	st    Stats
	links map[string]bool // symlinks written so far
	files map[string]bool // regular files written so far
	dirs  map[string]bool
}

func unsafeErr(format string, args ...any) error {
	return ferry.WrapError(ferry.EINVALID, ErrUnsafe, format, args...)
}

// cleanName turns an archive name into a clean relative path or says why not.
func cleanName(name string) (string, error) {
	if strings.ContainsRune(name, 0) || strings.Contains(name, `\`) {
		return "", unsafeErr("name has a NUL or backslash")
	}
	n := strings.TrimPrefix(name, "./")
	if strings.HasPrefix(n, "/") {
		return "", unsafeErr("absolute path")
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", unsafeErr("path has a .. component")
		}
	}
	c := path.Clean(n)
	if c == "" {
		c = "."
	}
	return c, nil
}

func (u *unpacker) entry(h *tar.Header, r io.Reader) error {
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	u.st.Files++
	if u.lim.MaxFiles > 0 && u.st.Files > u.lim.MaxFiles {
		return unsafeErr("more than %d entries (the limit on file count)", u.lim.MaxFiles)
	}
	if name == "." {
		return nil
	}
	if err := u.parents(name); err != nil {
		return err
	}
	if u.files[name] || u.links[name] || (u.dirs[name] && h.Typeflag != tar.TypeDir) {
		return unsafeErr("the archive holds this path twice")
	}
	target := filepath.Join(u.dst, filepath.FromSlash(name))
	perm := os.FileMode(h.Mode) & 0o777
	switch h.Typeflag {
	case tar.TypeDir:
		if u.dirs[name] {
			return os.Chmod(target, perm|0o700)
		}
		u.dirs[name] = true
		return os.Mkdir(target, perm|0o700)
	case tar.TypeReg, tar.TypeRegA:
		u.st.Bytes += h.Size
		if u.lim.MaxBytes > 0 && u.st.Bytes > u.lim.MaxBytes {
			return unsafeErr("unpacks to more than %d bytes (the limit on total size)", u.lim.MaxBytes)
		}
		u.files[name] = true
		return writeFile(target, perm, h, r)
	case tar.TypeSymlink:
		l := h.Linkname
		if l == "" || path.IsAbs(l) || strings.ContainsRune(l, 0) {
			return unsafeErr("symlink to %q points outside the release", l)
		}
		if rel := path.Join(path.Dir(name), l); rel == ".." || strings.HasPrefix(rel, "../") {
			return unsafeErr("symlink to %q points outside the release", l)
		}
		u.links[name] = true
		return os.Symlink(l, target)
	case tar.TypeLink:
		l, err := cleanName(h.Linkname)
		if err != nil || !u.files[l] {
			return unsafeErr("hard link to %q, which is not a file earlier in the archive", h.Linkname)
		}
		u.files[name] = true
		return os.Link(filepath.Join(u.dst, filepath.FromSlash(l)), target)
	case tar.TypeChar, tar.TypeBlock:
		return unsafeErr("device node")
	case tar.TypeFifo:
		return unsafeErr("fifo")
	}
	return unsafeErr("entry of tar type %q is not allowed", h.Typeflag)
}

// parents creates name's parent directories, refusing to go through a
// symlink or a file.
func (u *unpacker) parents(name string) error {
	dir := path.Dir(name)
	if u.dirs[dir] {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if u.links[p] {
			return unsafeErr("path goes through the symlink %s", p)
		}
		if u.files[p] {
			return unsafeErr("path goes through the file %s", p)
		}
		if u.dirs[p] {
			continue
		}
		if err := os.Mkdir(filepath.Join(u.dst, filepath.FromSlash(p)), 0o755); err != nil {
			return err
		}
		u.dirs[p] = true
	}
	return nil
}

func writeFile(target string, perm os.FileMode, h *tar.Header, r io.Reader) error {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if n != h.Size {
		return fmt.Errorf("truncated: %d of %d bytes", n, h.Size)
	}
	// OpenFile's mode passed through the umask; the archive's mode wins.
	if err := os.Chmod(target, perm); err != nil {
		return err
	}
	return os.Chtimes(target, h.ModTime, h.ModTime)
}

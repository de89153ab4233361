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
	Files       int
	Bytes       int64
	Linked      int   // regular files hard-linked from UnpackOptions.Reuse
	LinkedBytes int64 // their size
}

// UnpackOptions tune UnpackWith.
type UnpackOptions struct {
	Limits Limits
	// ReadOnly creates regular files without write bits, set on the open
	// file, so no second pass over the tree is needed; directories are left
	// writable for the caller to finish and lock.
	ReadOnly bool
	// Reuse is a directory holding an earlier unpack that nothing modifies
	// (the current release). A regular file found at the same path there,
	// owned by us, with the same size, mode and mtime, and — compared while
	// streaming — the same bytes is hard-linked from it instead of written:
	// what rsync's --link-dest does, and most of a new release's files are
	// usually unchanged. A path through a symlink there is never reused.
	Reuse string
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
	return UnpackWith(ctx, r, dst, UnpackOptions{Limits: lim})
}

// UnpackWith is Unpack with options; see UnpackOptions.
func UnpackWith(ctx context.Context, r io.Reader, dst string, opt UnpackOptions) (Stats, error) {
	var st Stats
	dr, err := Decompress(r)
	if err != nil {
		return st, fmt.Errorf("unpack: %w", err)
	}
	defer dr.Close()
	ra := newReadAhead(dr)
	defer ra.close()
	u := &unpacker{dst: dst, lim: opt.Limits, opt: opt, links: map[string]bool{}, files: map[string]bool{}, dirs: map[string]bool{".": true}}
	if opt.Reuse != "" {
		u.reuseDirs = map[string]bool{".": true}
		u.uid = os.Geteuid()
	}
	tr := tar.NewReader(ra)
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
	dst  string
	lim  Limits
	opt  UnpackOptions
	st   Stats
	buf  []byte // copy and compare buffers, allocated once
	obuf []byte
	uid  int
	// reuseDirs caches which directories under opt.Reuse are real
	// directories (true) or not (false: a symlink, a file, missing).
	reuseDirs map[string]bool
	links     map[string]bool // symlinks written so far
	files     map[string]bool // regular files written so far
	dirs      map[string]bool
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
	case tar.TypeReg: // tar.Reader reports the legacy TypeRegA as TypeReg (or TypeDir)
		u.st.Bytes += h.Size
		if u.lim.MaxBytes > 0 && u.st.Bytes > u.lim.MaxBytes {
			return unsafeErr("unpacks to more than %d bytes (the limit on total size)", u.lim.MaxBytes)
		}
		u.files[name] = true
		return u.writeFile(name, target, perm, h, r)
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

const copyBuf = 64 << 10

// writeFile writes the regular file h, read from r, to target with its
// final mode and mtime, both set on the open file; or hard-links it from
// opt.Reuse when the file there is the same.
func (u *unpacker) writeFile(name, target string, perm os.FileMode, h *tar.Header, r io.Reader) error {
	if u.opt.ReadOnly {
		perm &^= 0o222
	}
	if u.buf == nil {
		u.buf = make([]byte, copyBuf)
	}
	var (
		old     *file // the same path under Reuse, equal up to prefix
		prefix  int64
		pending []byte // bytes read from r that differ from old
	)
	if f := u.reusable(name, perm, h); f != nil {
		defer f.Close()
		same, n, rest, err := u.compare(f, r, h.Size)
		if err != nil {
			return err
		}
		if same {
			if err := os.Link(f.name, target); err == nil {
				u.st.Linked++
				u.st.LinkedBytes += h.Size
				return nil
			}
			// EMLINK, EXDEV, EPERM: copy the old file's bytes instead.
		}
		old, prefix, pending = f, n, rest
	}
	out, err := createFile(target, perm)
	if err != nil {
		return err
	}
	err = func() error {
		var n int64
		if old != nil && prefix > 0 { // bytes r already gave us, equal to old's
			if err := old.rewind(); err != nil {
				return err
			}
			m, err := io.CopyN(out, old, prefix)
			n += m
			if err != nil {
				return err
			}
		}
		if len(pending) > 0 {
			m, err := out.Write(pending)
			n += int64(m)
			if err != nil {
				return err
			}
		}
		m, err := io.CopyBuffer(out, r, u.buf)
		n += m
		if err != nil {
			return err
		}
		if n != h.Size {
			return fmt.Errorf("truncated: %d of %d bytes", n, h.Size)
		}
		// The mode passed through the umask; the archive's mode wins.
		return out.finish(perm, h.ModTime)
	}()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// reusable opens the file at name under opt.Reuse when it may be the same
// as h: a regular file of ours, reached through real directories only, with
// h's size, the final mode and h's mtime.
func (u *unpacker) reusable(name string, perm os.FileMode, h *tar.Header) *file {
	if u.opt.Reuse == "" || !u.reuseDir(path.Dir(name)) {
		return nil
	}
	f, err := openFile(filepath.Join(u.opt.Reuse, filepath.FromSlash(name)))
	if err != nil {
		return nil
	}
	m, err := f.meta()
	if err != nil || !m.regular || m.size != h.Size || m.perm != perm || !m.mtime.Equal(h.ModTime) || m.uid != u.uid {
		f.Close()
		return nil
	}
	return f
}

// reuseDir says whether dir under opt.Reuse is a real directory, and so
// are its parents: a symlink there (a shared directory) leads to files
// that can change, which must never be linked into a release.
func (u *unpacker) reuseDir(dir string) bool {
	if ok, seen := u.reuseDirs[dir]; seen {
		return ok
	}
	ok := u.reuseDir(path.Dir(dir))
	if ok {
		fi, err := os.Lstat(filepath.Join(u.opt.Reuse, filepath.FromSlash(dir)))
		ok = err == nil && fi.IsDir()
	}
	u.reuseDirs[dir] = ok
	return ok
}

// compare reads size bytes of the entry from r and as many from old. It
// stops at the first chunk that differs and returns how many bytes before
// it were equal and the differing chunk, which the caller must still write.
func (u *unpacker) compare(old *file, r io.Reader, size int64) (same bool, prefix int64, pending []byte, err error) {
	if u.obuf == nil {
		u.obuf = make([]byte, copyBuf)
	}
	for prefix < size {
		n := int(min(int64(len(u.buf)), size-prefix))
		got, err := io.ReadFull(r, u.buf[:n])
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
				return false, prefix, u.buf[:got], nil // truncated: the write path reports it
			}
			return false, prefix, nil, err
		}
		if _, err := io.ReadFull(old, u.obuf[:n]); err != nil || !bytes.Equal(u.buf[:n], u.obuf[:n]) {
			return false, prefix, u.buf[:n], nil
		}
		prefix += int64(n)
	}
	return true, prefix, nil, nil
}

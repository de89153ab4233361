package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
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
//
// Where a symlink points is decided on disk, not by its text: a/x -> ..
// then b -> a/x/.. reads as "a" but climbs out of dst, because the `..`
// starts from where a/x leads. So each symlink is resolved beneath dst
// when it is written (fsutil.ResolveBeneath: openat2 with RESOLVE_BENEATH,
// or the same walk by hand) and every one again once the archive is all
// written, since a later entry can complete a chain an earlier link
// starts. A link that dangles or loops leads nowhere and is accepted.
func Unpack(ctx context.Context, r io.Reader, dst string, lim Limits) (Stats, error) {
	return UnpackWith(ctx, r, dst, UnpackOptions{Limits: lim})
}

// UnpackWith is Unpack with options; see UnpackOptions.
func UnpackWith(ctx context.Context, r io.Reader, dst string, opt UnpackOptions) (_ Stats, err error) {
	var st Stats
	root, err := fsutil.OpenDir(dst)
	if err != nil {
		return st, fmt.Errorf("unpack: %w", err)
	}
	u := &unpacker{dst: dst, root: root, fd: -1, lim: opt.Limits, opt: opt, links: map[string]bool{}, files: map[string]bool{}, dirs: map[string]bool{".": true}}
	defer u.close()
	defer func() {
		// Refused for whatever reason (a later entry, a corrupt stream,
		// ctx): the tree is the caller's to remove, but a link that
		// leads out of it is removed now, not left for it to forget.
		if err != nil {
			for _, name := range u.symlinks {
				u.checkLink(name)
			}
		}
	}()
	dr, err := Decompress(r)
	if err != nil {
		return st, fmt.Errorf("unpack: %w", err)
	}
	defer dr.Close()
	ra := newReadAhead(dr)
	defer ra.close()
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
	// Now that nothing more is written, where every link leads is final.
	for _, name := range u.symlinks {
		if err := u.checkLink(name); err != nil {
			return u.st, fmt.Errorf("unpack: %s: %w", name, err)
		}
	}
	return u.st, nil
}

type unpacker struct {
	dst  string
	root int // descriptor of dst, which every name is resolved beneath
	// fd is the descriptor of the directory fdDir, the last one written
	// in: an archive lists a directory's files together.
	fd    int
	fdDir string
	lim   Limits
	opt   UnpackOptions
	st    Stats
	buf   []byte // copy and compare buffers, allocated once
	obuf  []byte
	uid   int
	// reuseDirs caches which directories under opt.Reuse are real
	// directories (true) or not (false: a symlink, a file, missing).
	reuseDirs map[string]bool
	links     map[string]bool // symlinks written so far
	symlinks  []string        // the same, in order, for the final check
	files     map[string]bool // regular files written so far
	dirs      map[string]bool
}

func (u *unpacker) close() {
	if u.fd >= 0 {
		unix.Close(u.fd)
	}
	unix.Close(u.root)
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
	dir, base := path.Split(name)
	dir = path.Clean(dir)
	if u.files[name] || u.links[name] || (u.dirs[name] && h.Typeflag != tar.TypeDir) {
		return unsafeErr("the archive holds this path twice")
	}
	// Refuse what cannot be written before creating its parents.
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink: // tar.Reader reports TypeRegA as TypeReg
	case tar.TypeChar, tar.TypeBlock:
		return unsafeErr("device node")
	case tar.TypeFifo:
		return unsafeErr("fifo")
	default:
		return unsafeErr("entry of tar type %q is not allowed", h.Typeflag)
	}
	dfd, err := u.dirFD(dir)
	if err != nil {
		return err
	}
	target := filepath.Join(u.dst, filepath.FromSlash(name))
	perm := os.FileMode(h.Mode) & 0o777
	switch h.Typeflag {
	case tar.TypeDir:
		if u.dirs[name] {
			return pathErr("chmod", target, unix.Fchmodat(dfd, base, uint32(perm|0o700), 0))
		}
		u.dirs[name] = true
		return pathErr("mkdir", target, unix.Mkdirat(dfd, base, uint32(perm|0o700)))
	case tar.TypeReg: // tar.Reader reports the legacy TypeRegA as TypeReg (or TypeDir)
		u.st.Bytes += h.Size
		if u.lim.MaxBytes > 0 && u.st.Bytes > u.lim.MaxBytes {
			return unsafeErr("unpacks to more than %d bytes (the limit on total size)", u.lim.MaxBytes)
		}
		u.files[name] = true
		return u.writeFile(name, dfd, base, target, perm, h, r)
	case tar.TypeSymlink:
		l := h.Linkname
		if l == "" || path.IsAbs(l) || strings.ContainsRune(l, 0) {
			return unsafeErr("symlink to %q points outside the release", l)
		}
		if rel := path.Join(dir, l); rel == ".." || strings.HasPrefix(rel, "../") {
			return unsafeErr("symlink to %q points outside the release", l)
		}
		if err := unix.Symlinkat(l, dfd, base); err != nil {
			return pathErr("symlink", target, err)
		}
		u.links[name] = true
		u.symlinks = append(u.symlinks, name)
		return u.checkLink(name)
	default: // tar.TypeLink
		l, err := cleanName(h.Linkname)
		if err != nil || !u.files[l] {
			return unsafeErr("hard link to %q, which is not a file earlier in the archive", h.Linkname)
		}
		// l was written through real directories only, and nothing can
		// turn one into a symlink since; resolving it beneath the root
		// without symlinks again makes that the kernel's word.
		ldir, lbase := path.Split(l)
		sfd, err := fsutil.OpenDirBeneath(u.root, path.Clean(ldir))
		if err != nil {
			return fmt.Errorf("hard link to %q: %w", h.Linkname, beneathErr(err))
		}
		defer unix.Close(sfd)
		u.files[name] = true
		// Flags 0: a symlink named last is linked itself, not followed.
		return pathErr("link", target, unix.Linkat(sfd, lbase, dfd, base, 0))
	}
}

// checkLink resolves the symlink name on disk beneath the release and
// refuses it when any step leaves. Not existing (yet) is no escape. A
// refused link is removed at once, so that not even a caller that forgets
// to remove the rejected tree keeps a way out.
func (u *unpacker) checkLink(name string) error {
	err := fsutil.ResolveBeneath(u.root, name)
	if errors.Is(err, fsutil.ErrOutside) {
		t := u.unlink(name)
		return unsafeErr("symlink to %q leads outside the release once the symlinks on its way are followed (a .. after a symlink climbs from where that symlink points, not from where it is); point it at its target without going through another link", t)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.ELOOP) {
		return err
	}
	return nil
}

// unlink removes the symlink name and returns its target, through a
// descriptor of its directory opened beneath the root.
func (u *unpacker) unlink(name string) string {
	dir, base := path.Split(name)
	fd, err := fsutil.OpenDirBeneath(u.root, path.Clean(dir))
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	b := make([]byte, 4096)
	n, _ := unix.Readlinkat(fd, base, b)
	unix.Unlinkat(fd, base, 0)
	return string(b[:max(n, 0)])
}

// beneathErr makes an error of fsutil.OpenDirBeneath one of the archive's
// when it is about what the path meets on disk; the others (EMFILE, EIO)
// are the host's.
func beneathErr(err error) error {
	if errors.Is(err, fsutil.ErrOutside) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return unsafeErr("%v", err)
	}
	return err
}

func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// dirFD returns a descriptor of the directory dir, creating it and its
// missing parents, refusing to go through a symlink or a file. The
// descriptor stays u's; the next call may close it.
func (u *unpacker) dirFD(dir string) (int, error) {
	if u.fd >= 0 && dir == u.fdDir {
		return u.fd, nil
	}
	// The maps say which component is what, for a clear error; opening
	// beneath the root without symlinks makes sure of it on disk.
	var parts []string
	if dir != "." {
		parts = strings.Split(dir, "/")
	}
	have := len(parts) // how many leading components exist
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if u.links[p] {
			return -1, unsafeErr("path goes through the symlink %s", p)
		}
		if u.files[p] {
			return -1, unsafeErr("path goes through the file %s", p)
		}
		if !u.dirs[p] {
			have = i
			break
		}
	}
	fd, err := fsutil.OpenDirBeneath(u.root, path.Join(append([]string{"."}, parts[:have]...)...))
	if err != nil {
		return -1, beneathErr(err)
	}
	for i := have; i < len(parts); i++ {
		p := strings.Join(parts[:i+1], "/")
		if err := unix.Mkdirat(fd, parts[i], 0o755); err != nil {
			unix.Close(fd)
			return -1, pathErr("mkdir", filepath.Join(u.dst, p), err)
		}
		u.dirs[p] = true
		next, err := fsutil.OpenDirBeneath(fd, parts[i])
		unix.Close(fd)
		if err != nil {
			return -1, beneathErr(err)
		}
		fd = next
	}
	if u.fd >= 0 {
		unix.Close(u.fd)
	}
	u.fd, u.fdDir = fd, dir
	return fd, nil
}

const copyBuf = 64 << 10

// writeFile writes the regular file h, read from r, to target with its
// final mode and mtime, both set on the open file; or hard-links it from
// opt.Reuse when the file there is the same.
func (u *unpacker) writeFile(name string, dfd int, base, target string, perm os.FileMode, h *tar.Header, r io.Reader) error {
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
			if err := unix.Linkat(unix.AT_FDCWD, f.name, dfd, base, 0); err == nil {
				u.st.Linked++
				u.st.LinkedBytes += h.Size
				return nil
			}
			// EMLINK, EXDEV, EPERM: copy the old file's bytes instead.
		}
		old, prefix, pending = f, n, rest
	}
	out, err := createFileAt(dfd, base, target, perm)
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

package artifact

import (
	"io"
	"io/fs"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// file is a bare file descriptor for Unpack's files. An *os.File costs
// several fcntl(2) calls per file (checking for non-blocking mode on open,
// and Fd's switch back to blocking), a measurable share of unpacking
// thousands of small files; these are regular files, which never block in
// the poller's sense anyway.
type file struct {
	fd   int
	name string
}

func retryEINTR[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err != unix.EINTR {
			return v, err
		}
	}
}

// createFileAt creates base in the directory dirfd, which must not exist,
// for writing; it never follows a symlink. name is for errors.
func createFileAt(dirfd int, base, name string, perm os.FileMode) (*file, error) {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &file{fd, name}, nil
}

// openFile opens name for reading, failing on a symlink.
func openFile(name string) (*file, error) {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open(name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &file{fd, name}, nil
}

func (f *file) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := retryEINTR(func() (int, error) { return unix.Read(f.fd, p) })
	switch {
	case err != nil:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (f *file) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := retryEINTR(func() (int, error) { return unix.Write(f.fd, p[done:]) })
		if err != nil {
			return done, &fs.PathError{Op: "write", Path: f.name, Err: err}
		}
		done += n
	}
	return done, nil
}

func (f *file) rewind() error {
	_, err := unix.Seek(f.fd, 0, io.SeekStart)
	return err
}

// meta is what Unpack compares of a file it may reuse.
type meta struct {
	regular bool
	size    int64
	perm    os.FileMode
	mtime   time.Time
	uid     int
}

func (f *file) meta() (meta, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return meta{}, err
	}
	return meta{
		regular: st.Mode&unix.S_IFMT == unix.S_IFREG,
		size:    st.Size,
		perm:    os.FileMode(st.Mode & 0o777),
		mtime:   time.Unix(st.Mtim.Unix()),
		uid:     int(st.Uid),
	}, nil
}

// finish sets the mode (which passed through the umask at creation) and
// the times on the open file, sparing two path lookups.
func (f *file) finish(perm os.FileMode, t time.Time) error {
	if err := unix.Fchmod(f.fd, uint32(perm.Perm())); err != nil {
		return &fs.PathError{Op: "chmod", Path: f.name, Err: err}
	}
	ts := [2]unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	// utimensat(fd, NULL, times, 0) is futimens(3); x/sys has no wrapper
	// that passes a NULL path.
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(f.fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return &fs.PathError{Op: "futimens", Path: f.name, Err: e}
	}
	return nil
}

func (f *file) Close() error {
	if err := unix.Close(f.fd); err != nil {
		return &fs.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

//go:build !linux

package artifact

import (
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// file is an *os.File here; see fd_linux.go for why Linux uses a bare fd.
type file struct {
	*os.File
	name string
}

func createFileAt(dirfd int, base, name string, perm os.FileMode) (*file, error) {
	fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return &file{os.NewFile(uintptr(fd), name), name}, nil
}

func openFile(name string) (*file, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return &file{f, name}, nil
}

func (f *file) rewind() error {
	_, err := f.Seek(0, io.SeekStart)
	return err
}

type meta struct {
	regular bool
	size    int64
	perm    os.FileMode
	mtime   time.Time
	uid     int
}

func (f *file) meta() (meta, error) {
	fi, err := f.Stat()
	if err != nil {
		return meta{}, err
	}
	uid := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid = int(st.Uid)
	}
	return meta{regular: fi.Mode().IsRegular(), size: fi.Size(), perm: fi.Mode().Perm(), mtime: fi.ModTime(), uid: uid}, nil
}

func (f *file) finish(perm os.FileMode, t time.Time) error {
	if err := f.Chmod(perm); err != nil {
		return err
	}
	return os.Chtimes(f.name, t, t)
}

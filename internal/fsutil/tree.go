//go:build unix

package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// RemoveTree removes the tree at path, which may be read-only: it gives
// each directory back its owner's bits before emptying it. Every step
// goes through a descriptor of the directory above, opened with
// O_NOFOLLOW, so a symlink anywhere in the tree (a shared directory, or
// whatever an archive held) is removed, never followed, not even by a
// chmod. It goes on past what it cannot remove and returns the first
// error. A missing path is not an error.
func RemoveTree(path string) error {
	path = filepath.Clean(path)
	parent, err := OpenDir(filepath.Dir(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	return removeAt(parent, filepath.Base(path), path)
}

func removeAt(dirfd int, name, display string) error {
	uerr := unix.Unlinkat(dirfd, name, 0)
	switch uerr {
	case nil, unix.ENOENT:
		return nil
	case unix.EISDIR, unix.EPERM: // a directory: EISDIR on Linux, EPERM elsewhere
	default:
		return &fs.PathError{Op: "unlink", Path: display, Err: uerr}
	}
	fd, err := openTreeDir(dirfd, name)
	if err == unix.ENOTDIR || err == unix.ELOOP {
		// Not a directory: the unlink's EPERM was real (an immutable
		// file, a sticky directory).
		return &fs.PathError{Op: "unlink", Path: display, Err: uerr}
	}
	if err != nil {
		return &fs.PathError{Op: "open", Path: display, Err: err}
	}
	f := os.NewFile(uintptr(fd), display)
	unix.Fchmod(fd, 0o700) // an error shows as the unlinks' below
	names, err := f.Readdirnames(-1)
	var first error
	if err != nil {
		first = err
	}
	for _, n := range names {
		if err := removeAt(fd, n, display+"/"+n); err != nil && first == nil {
			first = err
		}
	}
	f.Close()
	if first != nil {
		return first
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return &fs.PathError{Op: "rmdir", Path: display, Err: err}
	}
	return nil
}

// openTreeDir opens directory name in dirfd for reading its entries,
// never following a symlink. A directory without read permission gets
// its owner's bits back first, once it is known to be a directory: the
// chmod follows a symlink, so it must not meet one.
func openTreeDir(dirfd int, name string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err != unix.EACCES {
		return fd, err
	}
	var st unix.Stat_t
	if serr := fstatat(dirfd, name, &st); serr != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return -1, err
	}
	if cerr := unix.Fchmodat(dirfd, name, 0o700, 0); cerr != nil {
		return -1, err
	}
	return unix.Openat(dirfd, name, flags, 0)
}

// ChmodDirs sets mode on the directory at path and on every directory in
// it, deepest first. It opens each with O_NOFOLLOW from the descriptor of
// the one above and changes it through its own descriptor, so a symlink
// in the tree is left as it is and what it points at is never touched.
func ChmodDirs(path string, mode fs.FileMode) error { return chmodTree(path, mode, false) }

// SealTree makes the tree at path read-only: every regular file loses its
// write bits and every directory gets dirMode, deepest first, through
// descriptors as ChmodDirs, so a symlink a hook left in the tree is
// skipped, and what it points at never changes.
func SealTree(path string, dirMode fs.FileMode) error { return chmodTree(path, dirMode, true) }

func chmodTree(path string, mode fs.FileMode, files bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return chmodAt(fd, path, uint32(mode.Perm()), files)
}

// chmodAt owns fd and closes it. With files, regular files lose their
// write bits too.
func chmodAt(fd int, display string, mode uint32, files bool) error {
	f := os.NewFile(uintptr(fd), display)
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := display + "/" + e.Name()
		switch {
		case e.IsDir(): // a symlink is not, whatever it points at
			sub, err := openTreeDir(fd, e.Name())
			if err != nil {
				return &fs.PathError{Op: "open", Path: name, Err: err}
			}
			if err := chmodAt(sub, name, mode, files); err != nil {
				return err
			}
		case files && e.Type().IsRegular():
			if err := dropWrite(fd, e.Name(), name); err != nil {
				return err
			}
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &fs.PathError{Op: "chmod", Path: display, Err: err}
	}
	return nil
}

// dropWrite takes the write bits off the regular file name in dirfd.
func dropWrite(dirfd int, name, display string) error {
	// O_NONBLOCK: should the entry have become a FIFO, opening it does not
	// wait for a writer.
	ffd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: display, Err: err}
	}
	defer unix.Close(ffd)
	var st unix.Stat_t
	err = unix.Fstat(ffd, &st)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		err = unix.Fchmod(ffd, (st.Mode&0o7777)&^0o222)
	}
	if err != nil {
		return &fs.PathError{Op: "chmod", Path: display, Err: err}
	}
	return nil
}

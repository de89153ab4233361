//go:build unix

package fsutil

import (
	"errors"
	"io/fs"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrOutside is wrapped by the errors of OpenDirBeneath and ResolveBeneath
// for a name that leads out of the directory it must stay beneath.
var ErrOutside = errors.New("leads outside the directory")

// maxSymlinks is how many symlinks one resolution follows before giving up
// with ELOOP, as Linux's path walk does.
const maxSymlinks = 40

// These helpers resolve names on disk, one component after the other, the
// way the kernel will when the name is used later: checking a symlink's
// target as text says nothing about where it leads once a component of it
// is itself a symlink (a/x -> .., then b -> a/x/.. is "a" as text and the
// parent of the tree on disk). Where the kernel has openat2(2) (Linux 5.6)
// it does the walk with RESOLVE_BENEATH; elsewhere walk does it with
// fstatat and readlinkat, holding a descriptor for every directory it
// passed so that `..` never depends on a name that could have moved.

var (
	openat2Once sync.Once
	openat2OK   bool
	// noOpenat2 makes the helpers use walk; a test switches it.
	noOpenat2 bool
)

func haveOpenat2() bool {
	if noOpenat2 {
		return false
	}
	openat2Once.Do(func() { openat2OK = probeOpenat2() })
	return openat2OK
}

// OpenDirBeneath opens the directory name under the directory dirfd,
// refusing every symlink on the way, the last component's included
// (ELOOP), and any `..` that would climb above dirfd (ErrOutside). The
// descriptor (O_PATH on Linux) is for the *at calls; the caller closes it.
func OpenDirBeneath(dirfd int, name string) (int, error) {
	if haveOpenat2() {
		fd, err := openat2Beneath(dirfd, name, true)
		return fd, beneathErr("open", name, err)
	}
	fd, err := walk(dirfd, name, false, true)
	return fd, beneathErr("open", name, err)
}

// ResolveBeneath follows name under the directory dirfd, symlinks and all,
// the last component's too, and says whether it stays beneath dirfd: nil
// when it reaches something that exists, an error wrapping ErrOutside when
// any step leaves (an absolute symlink, a `..` above dirfd), and the
// walk's error otherwise — ENOENT or ENOTDIR for a name that leads nowhere
// (yet), ELOOP for a loop.
func ResolveBeneath(dirfd int, name string) error {
	var (
		fd  int
		err error
	)
	if haveOpenat2() {
		fd, err = openat2Beneath(dirfd, name, false)
	} else {
		fd, err = walk(dirfd, name, true, false)
	}
	if fd >= 0 {
		unix.Close(fd)
	}
	return beneathErr("resolve", name, err)
}

func beneathErr(op, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case err == unix.EXDEV, errors.Is(err, ErrOutside):
		return &fs.PathError{Op: op, Path: name, Err: ErrOutside}
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// walk is what openat2 with RESOLVE_BENEATH does, by hand: each component
// is looked at with fstatat (never following), a symlink is replaced by
// its target (when follow is set; ELOOP otherwise), a directory is opened
// with O_NOFOLLOW, and `..` pops back to the descriptor of the directory
// above — which fails with ErrOutside once none is left. With wantDir, the
// result must be a directory and its descriptor is returned; otherwise the
// name is only resolved and -1 returned.
func walk(dirfd int, name string, follow, wantDir bool) (int, error) {
	if strings.HasPrefix(name, "/") {
		return -1, ErrOutside
	}
	cur, err := openDirAt(dirfd, ".")
	if err != nil {
		return -1, err
	}
	var above []int // directories passed, outermost first
	defer func() {
		for _, fd := range above {
			unix.Close(fd)
		}
		if cur >= 0 {
			unix.Close(cur)
		}
	}()
	todo := strings.Split(name, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(above) == 0 {
				return -1, ErrOutside
			}
			unix.Close(cur)
			cur, above = above[len(above)-1], above[:len(above)-1]
			continue
		}
		var st unix.Stat_t
		if err := fstatat(cur, c, &st); err != nil {
			return -1, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if !follow {
				return -1, unix.ELOOP
			}
			if links++; links > maxSymlinks {
				return -1, unix.ELOOP
			}
			target, err := readlinkat(cur, c)
			if err != nil {
				return -1, err
			}
			if strings.HasPrefix(target, "/") {
				return -1, ErrOutside
			}
			todo = append(strings.Split(target, "/"), todo...)
		case unix.S_IFDIR:
			fd, err := openDirAt(cur, c)
			if err != nil {
				return -1, err // replaced since fstatat: O_NOFOLLOW refused it
			}
			above = append(above, cur)
			cur = fd
		default:
			for _, rest := range todo {
				if rest != "" {
					return -1, unix.ENOTDIR // "file/x", "file/.."
				}
			}
			if len(todo) > 0 || wantDir {
				return -1, unix.ENOTDIR // "file/"
			}
			return -1, nil
		}
	}
	if !wantDir {
		return -1, nil
	}
	fd := cur
	cur = -1
	return fd, nil
}

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, b)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(b[:n]), nil
		}
	}
}

// openDirAt opens the single component name of dirfd, a directory, never
// following a symlink.
func openDirAt(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, dirOpenFlags|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// OpenDir opens the directory at path, through whatever symlinks the path
// holds (the tree above a root is the operator's), as a descriptor for
// OpenDirBeneath and ResolveBeneath.
func OpenDir(path string) (int, error) {
	for {
		fd, err := unix.Open(path, dirOpenFlags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

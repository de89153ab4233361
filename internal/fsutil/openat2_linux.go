package fsutil

import "golang.org/x/sys/unix"

// dirOpenFlags open directories for path walking only: an O_PATH
// descriptor needs no read permission and serves every *at call.
const dirOpenFlags = unix.O_PATH

// probeOpenat2 says whether this kernel has openat2(2): ENOSYS before
// Linux 5.6; EPERM where an older container seccomp profile denies
// syscalls it does not know.
func probeOpenat2() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, ".", &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH})
	if err != nil {
		return err != unix.ENOSYS && err != unix.EPERM
	}
	unix.Close(fd)
	return true
}

// openat2Beneath opens name under dirfd with RESOLVE_BENEATH: the kernel
// refuses (EXDEV) any step out of dirfd, an absolute symlink included. A
// directory, no symlinks at all (ELOOP), with dir; otherwise anything,
// following symlinks, the last one included.
func openat2Beneath(dirfd int, name string, dir bool) (int, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}
	if dir {
		how.Flags |= unix.O_DIRECTORY
		how.Resolve |= unix.RESOLVE_NO_SYMLINKS
	}
	for tries := 0; ; tries++ {
		fd, err := unix.Openat2(dirfd, name, &how)
		// EAGAIN: a rename elsewhere on the system raced the `..` check;
		// the kernel asks for a retry, and a few are plenty.
		if err != unix.EINTR && (err != unix.EAGAIN || tries == 100) {
			return fd, err
		}
	}
}

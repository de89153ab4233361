//go:build unix && !linux

package fsutil

import "golang.org/x/sys/unix"

const dirOpenFlags = unix.O_RDONLY

func probeOpenat2() bool { return false }

func openat2Beneath(dirfd int, name string, dir bool) (int, error) { return -1, unix.ENOSYS }

//go:build unix

package graceful

import "syscall"

// canInherit says whether passed descriptors mean anything on this system.
const canInherit = true

func closeOnExec(fd int) { syscall.CloseOnExec(fd) }

// isListening reports whether fd is a socket in the listening state, so that
// a connected or datagram socket passed alongside is not mistaken for one.
func isListening(fd int) bool {
	v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	return err == nil && v != 0
}

// reusePort sets SO_REUSEPORT before bind, so a second copy of the app run
// by hand (or by a supervisor without socket passing) can bind the same
// address while the first drains: the kernel spreads new connections over
// both until the old one closes its listener.
func reusePort(network, address string, c syscall.RawConn) error {
	if soReusePort == 0 {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

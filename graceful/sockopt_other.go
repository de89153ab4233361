//go:build !unix

package graceful

import "syscall"

// Socket passing and SO_REUSEPORT are Unix notions; elsewhere Listen only
// binds, so apps still build and run for development.
const canInherit = false

func closeOnExec(fd int) {}

func isListening(fd int) bool { return false }

func reusePort(network, address string, c syscall.RawConn) error { return nil }

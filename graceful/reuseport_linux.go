//go:build linux && (386 || amd64 || arm)

package graceful

// soReusePort is SO_REUSEPORT, spelled out because the frozen syscall tables
// of these Linux ports predate it (golang.org/x/sys has it, but graceful is
// imported by apps and stays on the standard library).
const soReusePort = 0xf

//go:build solaris

package graceful

// soReusePort is 0 where the syscall package does not know the option:
// Listen then binds without it, so two copies cannot overlap there.
const soReusePort = 0

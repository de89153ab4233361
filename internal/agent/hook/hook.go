// Package hook runs an app's or a manifest's hook commands with `sh -c`,
// one after another, stopping at the first that fails.
package hook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Runner runs commands in Dir with Env added to the environment; their
// output goes to Out.
type Runner struct {
	Dir string
	Env []string
	Out io.Writer
	// WaitDelay bounds how long a cancelled hook's pipes may stay open.
	WaitDelay time.Duration
}

// Run runs each command in turn with stdin (which may be nil) on its
// standard input. A cancelled ctx kills the whole process group of the
// running command.
func (r Runner) Run(ctx context.Context, phase string, cmds []string, stdin []byte) error {
	for _, c := range cmds {
		cmd := exec.CommandContext(ctx, "sh", "-c", c)
		cmd.Dir = r.Dir
		cmd.Env = append(os.Environ(), r.Env...)
		out := r.Out
		if out == nil {
			out = io.Discard
		}
		cmd.Stdout, cmd.Stderr = out, out
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = r.WaitDelay
		if cmd.WaitDelay == 0 {
			cmd.WaitDelay = 5 * time.Second
		}
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s hook `%s` failed: %w", phase, c, err)
		}
	}
	return nil
}

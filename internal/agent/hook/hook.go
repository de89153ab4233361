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
// output goes to Out, and the last lines of a failing one into its Error.
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
		tail := &tailBuffer{max: tailBytes}
		w := io.MultiWriter(out, tail)
		cmd.Stdout, cmd.Stderr = w, w
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
			return &Error{Phase: phase, Command: c, Err: err, Output: tail.lines(tailLines)}
		}
	}
	return nil
}

// Error is a hook that failed: which, how, and the last lines it printed
// (stdout and stderr as they came), for the user to see why.
type Error struct {
	Phase   string // pre, post, success, failure
	Command string
	Err     error
	Output  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s hook `%s` failed: %v", e.Phase, e.Command, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// How much of a failing hook's output its Error keeps.
const (
	tailBytes = 64 << 10
	tailLines = 20
)

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

// lines is the last n lines of what was written.
func (t *tailBuffer) lines(n int) string {
	s := bytes.TrimRight(t.b, "\n")
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if n--; n == 0 {
				return string(s[i+1:])
			}
		}
	}
	return string(s)
}

package devrun

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// instance is one running copy of a process: web.1, web.2, …
//
// Its fields after start are owned by Runner.Run's goroutine; the goroutines
// start spawns only hand over through channels.
type instance struct {
	name    string // web.1
	color   string
	port    int
	command string

	cmd    *exec.Cmd
	out    *os.File      // read end of the pipe its stdout and stderr share
	copied chan struct{} // closed once its output has all been printed

	exited  bool // the shell (process group leader) has been reaped
	drained bool // nothing holds its output open any more
	failure string
}

// exit is an instance's reaped shell and how it ended.
type exit struct {
	in  *instance
	err error
}

// start runs the instance's command in dir with env, in a process group of
// its own so that stopping it stops whatever it started too. It reports to
// exits when the shell has exited and to drains when its output ends.
func (in *instance) start(dir string, env []string, con *console, exits chan<- exit, drains chan<- *instance) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	// One pipe for stdout and stderr keeps their lines in the order written.
	cmd := exec.Command("/bin/sh", "-c", shellCommand(in.command))
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	w.Close() // the children hold it now; EOF comes when the last one closes it
	if err != nil {
		r.Close()
		return err
	}
	in.cmd, in.out, in.copied = cmd, r, make(chan struct{})
	go func() {
		con.copyLines(r, in.name, in.color)
		close(in.copied)
		drains <- in
	}()
	go func() {
		err := cmd.Wait()
		// Print its last lines before saying it exited, unless something
		// it started keeps the output open.
		t := time.NewTimer(drainGrace)
		select {
		case <-in.copied:
		case <-t.C:
		}
		t.Stop()
		exits <- exit{in, err}
	}()
	return nil
}

// signal sends sig to the instance's whole process group. The group may
// outlive the shell, so this is sent even after the shell has exited.
func (in *instance) signal(sig unix.Signal) {
	unix.Kill(-in.cmd.Process.Pid, sig) // ESRCH: the group is already gone
}

// describe says how the shell ended, and whether that was clean after
// SIGTERM (stopped) or when it ended by itself (!stopped).
func (in *instance) describe(stopped bool) (what string, clean bool) {
	ws, ok := in.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return "exited: " + in.cmd.ProcessState.String(), false
	case ws.Signaled():
		sig := ws.Signal()
		return fmt.Sprintf("terminated by %s", unix.SignalName(sig)), stopped && (sig == syscall.SIGTERM || sig == syscall.SIGINT)
	}
	code := ws.ExitStatus()
	// A shell reports a child killed by SIGTERM or SIGINT as 128+signal.
	return fmt.Sprintf("exited with code %d", code),
		code == 0 || stopped && (code == 128+int(syscall.SIGTERM) || code == 128+int(syscall.SIGINT))
}

// shellCommand makes sh exec a single simple command, so the app itself
// is the group leader and gets signals first-hand. A list, pipeline or a
// command starting with a shell builtin (trap, cd, export, VAR=…) cannot
// be exec'd and runs as a script; stopping is the same either way because
// signals go to the whole process group.
func shellCommand(command string) string {
	if strings.ContainsAny(command, ";&|\n()`{}") {
		return command
	}
	first, _, _ := strings.Cut(strings.TrimSpace(command), " ")
	if strings.Contains(first, "=") || builtins[first] {
		return command
	}
	return "exec " + command
}

// builtins are the sh words that exec would look for as programs and fail.
var builtins = map[string]bool{
	".": true, ":": true, "!": true, "alias": true, "break": true, "case": true, "cd": true,
	"command": true, "continue": true, "eval": true, "exec": true, "exit": true, "export": true,
	"for": true, "if": true, "local": true, "read": true, "readonly": true, "return": true,
	"set": true, "shift": true, "source": true, "time": true, "trap": true, "ulimit": true,
	"umask": true, "unset": true, "until": true, "wait": true, "while": true,
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/internal/agent/install"
)

// An agent upgrades itself the way einhorn and tableflip do: it starts the
// new binary and exits once the new agent has adopted the apps and serves.
// The public ports never move: they live in the proxy process (package
// proxyd), which the new agent finds on the control socket, and upgrades
// in the same way when it runs another binary. An agent from before the
// proxy process hands over the listening socket of every port it owns
// instead (one accept queue, two processes), and the new agent passes them
// on to a proxy process before it says it serves; the old one then stops
// accepting, lets its in-flight requests finish and exits. The apps never
// stop.
const (
	// envListeners names the sockets handed over: "app/process=fd,…".
	envListeners = "FERRY_AGENT_LISTENERS"
	// envReadyFD is the pipe the new agent closes once it serves.
	envReadyFD = "FERRY_AGENT_READY_FD"
	// upgradeTimeout bounds how long the old agent waits for the new one.
	upgradeTimeout = time.Minute
)

// inherited is what an upgrading agent handed this one.
type inherited struct {
	listeners map[string]net.Listener // by "app/process"
	ready     *os.File
}

// takeInherited reads and clears the hand-over environment.
func takeInherited() (*inherited, error) {
	spec, fdText := os.Getenv(envListeners), os.Getenv(envReadyFD)
	os.Unsetenv(envListeners)
	os.Unsetenv(envReadyFD)
	if fdText == "" {
		return nil, nil
	}
	in := &inherited{listeners: map[string]net.Listener{}}
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return nil, fmt.Errorf("agent: %s=%q: %w", envReadyFD, fdText, err)
	}
	// Not for this agent's children: the old agent waits for every copy of
	// the pipe to close, and the proxy process this agent may start before
	// it serves would keep one open for as long as it runs.
	syscall.CloseOnExec(fd)
	in.ready = os.NewFile(uintptr(fd), "upgrade-ready")
	for _, item := range strings.Split(spec, ",") {
		if item == "" {
			continue
		}
		name, fdText, ok := strings.Cut(item, "=")
		fd, err := strconv.Atoi(fdText)
		if !ok || err != nil {
			return nil, fmt.Errorf("agent: %s: bad item %q", envListeners, item)
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("agent: inherited socket %s: %w", name, err)
		}
		in.listeners[name] = ln
	}
	return in, nil
}

// listener hands out the inherited socket for app/process, once.
func (in *inherited) listener(app, process string) net.Listener {
	if in == nil {
		return nil
	}
	key := app + "/" + process
	ln := in.listeners[key]
	delete(in.listeners, key)
	return ln
}

// serving tells the old agent this one serves, and closes what no app
// claimed.
func (in *inherited) serving() {
	if in == nil {
		return
	}
	for _, ln := range in.listeners {
		ln.Close()
	}
	in.ready.Write([]byte("ready\n"))
	in.ready.Close()
}

// lockWaiting takes the agent lock, waiting for an upgrading agent to let
// go of it when this one is its successor.
func lockWaiting(ctx context.Context, path string, wait bool) (func(), error) {
	deadline := time.Now().Add(upgradeTimeout)
	for {
		unlock, err := install.LockFile(path)
		if err == nil || !wait || time.Now().After(deadline) {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// handOver starts the new agent (Self, with this agent's arguments) and
// waits until it serves. Before it is called, every app worker has stopped
// and the lock is released; the ports are served by the proxy process.
func (a *Agent) handOver(ctx context.Context) error {
	if a.cfg.Self == "" {
		return errors.New("upgrade: the path of the ferry binary is unknown")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(a.cfg.Self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.Env = append(os.Environ(), envListeners+"=", fmt.Sprintf("%s=%d", envReadyFD, 3))
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("upgrade: start %s: %w", a.cfg.Self, err)
	}
	w.Close()
	a.log.Info("upgrade: new agent started", "pid", cmd.Process.Pid)
	got := make(chan error, 1)
	go func() {
		b, err := io.ReadAll(r)
		if err == nil && !strings.HasPrefix(string(b), "ready") {
			err = errors.New("it exited before it served")
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			cmd.Process.Kill()
			return fmt.Errorf("upgrade: new agent (pid %d): %w", cmd.Process.Pid, err)
		}
	case <-time.After(upgradeTimeout):
		cmd.Process.Kill()
		return fmt.Errorf("upgrade: new agent (pid %d) did not serve within %v", cmd.Process.Pid, upgradeTimeout)
	}
	cmd.Process.Release()
	return nil
}

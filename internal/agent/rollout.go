package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/agent/listenfd"
	"github.com/ferrydeploy/ferry/internal/agent/proxy"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/desired"
)

// portOwner is the agent's hold on a process's public port: the listening
// socket, and in proxy mode the reverse proxy serving it. Owning the port
// is what lets an upgrade start the new instance before stopping the old
// one without a moment where nothing listens.
type portOwner struct {
	mode  string
	port  int
	ln    net.Listener
	proxy *proxy.Proxy
}

// usesOwner reports whether p's upgrades go through an agent-owned port.
func usesOwner(p ferry.Process) bool {
	return p.Port > 0 && (p.Upgrade == ferry.UpgradeProxy || p.Upgrade == ferry.UpgradeHandoff)
}

// owner returns the port owner of process p, opening it on first use.
func (r *appRunner) owner(p ferry.Process) (*portOwner, error) {
	if !usesOwner(p) {
		return nil, nil
	}
	if o := r.owners[p.Name]; o != nil {
		if o.mode == p.Upgrade && o.port == p.Port {
			return o, nil
		}
		// The port or mode changed: nothing can be handed over between
		// them, so the old one closes first.
		o.close()
		delete(r.owners, p.Name)
	}
	ln := r.a.inherited.listener(r.name, p.Name)
	if ln == nil {
		var err error
		if ln, err = listenReusePort(fmt.Sprintf(":%d", p.Port)); err != nil {
			return nil, fmt.Errorf("%s: port %d: %w", p.Name, p.Port, err)
		}
	}
	o := &portOwner{mode: p.Upgrade, port: p.Port, ln: ln}
	if p.Upgrade == ferry.UpgradeProxy {
		o.proxy = proxy.New(proxy.Options{Logger: r.a.log.With("app", r.name, "process", p.Name)})
		go o.proxy.Serve(ln)
	}
	r.owners[p.Name] = o
	return o, nil
}

// listenReusePort binds with SO_REUSEPORT so a restarted agent can bind
// the port again while instances it adopts still hold the socket an
// earlier agent handed them.
func listenReusePort(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

func (o *portOwner) close() {
	if o.proxy != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		o.proxy.Shutdown(ctx)
		cancel()
	}
	o.ln.Close()
}

// prepare fits an instance's spec to the owner: in proxy mode the instance
// listens on its own loopback port behind the proxy; in handoff mode it
// starts through ferry's shim with the owner's socket as fd 3.
func (r *appRunner) prepare(o *portOwner, s *supervise.Spec, fresh bool) error {
	if o == nil {
		return nil
	}
	switch o.mode {
	case ferry.UpgradeProxy:
		if fresh || s.Port == 0 || s.Port == o.port {
			port, err := freePort()
			if err != nil {
				return err
			}
			s.Port = port
		}
		setEnv(&s.Env, "PORT", fmt.Sprint(s.Port))
		if s.Health == nil {
			// Without a check of its own, an instance is ready when it
			// accepts connections on its port.
			s.Health = &ferry.Health{TCP: true, Interval: 100 * time.Millisecond, Timeout: time.Second, Healthy: 1, Unhealthy: 3}
		}
	case ferry.UpgradeHandoff:
		self := r.a.cfg.Self
		if self == "" {
			return fmt.Errorf("%s: handoff needs the path of the ferry binary", s.Process)
		}
		ln := o.ln
		name := s.Process
		// Every instance serves the one shared socket, so that is the port
		// its health check (and $PORT) names: a check through it reaches
		// whichever instance accepts, so it says that the port answers,
		// not which instance does. The port answers for the old instance
		// too: only the new one's own READY=1 says it is ready.
		s.Port = o.port
		setEnv(&s.Env, "PORT", fmt.Sprint(o.port))
		s.NotifyOnly = true
		s.Wrap = func(argv []string) ([]string, []string, []*os.File, error) {
			return listenfd.Command(self, argv, []net.Listener{ln}, []string{name})
		}
	}
	return nil
}

func setEnv(env *[]string, key, value string) {
	*env = slices.DeleteFunc(*env, func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
	*env = append(*env, key+"="+value)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func backend(st supervise.Status) string { return fmt.Sprintf("127.0.0.1:%d", st.Port) }

// roll replaces the running instances with release id's. A process that
// owns its port through the proxy or a handed-off socket is replaced one
// instance at a time — start new, wait until ready, switch, drain old, stop
// old — so it never stops serving; other processes stop before their
// replacements start. When a new instance crashes or never becomes ready,
// it is stopped, the old instances keep serving and roll returns the
// error.
func (r *appRunner) roll(app *ferry.App, want *desired.App, id string, timeout time.Duration) error {
	specs, err := r.specs(app, want, id, nil)
	if err != nil {
		return err
	}
	byProc := map[string][]supervise.Spec{}
	for _, s := range specs {
		byProc[s.Process] = append(byProc[s.Process], s)
	}
	old := map[string][]*supervise.Instance{}
	for _, p := range r.procs {
		name := p.Spec().Process
		old[name] = append(old[name], p)
	}
	var done []*supervise.Instance
	// publish keeps r.procs equal to what runs: what is done, plus the old
	// instances not replaced yet.
	publish := func(pending ...*supervise.Instance) {
		live := slices.Clone(done)
		live = append(live, pending...)
		for _, ps := range old {
			live = append(live, ps...)
		}
		r.setProcs(live)
	}
	for _, p := range app.Processes {
		news, olds := byProc[p.Name], old[p.Name]
		delete(old, p.Name)
		o, err := r.owner(p)
		if err != nil {
			publish(olds...)
			return err
		}
		if o == nil {
			stopParallel(olds)
			publish()
			for _, s := range news {
				inst, err := supervise.Start(s, nil)
				if err != nil {
					publish()
					return err
				}
				done = append(done, inst)
				publish()
			}
			continue
		}
		for k := 0; k < max(len(news), len(olds)); k++ {
			var prev *supervise.Instance
			if k < len(olds) {
				prev = olds[k]
			}
			if k >= len(news) { // scaled down
				r.retire(o, prev)
				publish(tail(olds, k+1)...)
				continue
			}
			if prev != nil && sameRun(prev.Spec(), news[k]) {
				done = append(done, prev)
				continue
			}
			s := news[k]
			if err := r.prepare(o, &s, true); err != nil {
				publish(tail(olds, k)...)
				return err
			}
			inst, err := r.startReady(s, timeout)
			if err != nil {
				publish(tail(olds, k)...)
				return err
			}
			if o.proxy != nil {
				o.proxy.Add(backend(inst.Status()))
			}
			done = append(done, inst)
			publish(tail(olds, k)...)
			if prev != nil {
				r.retire(o, prev)
				publish(tail(olds, k+1)...)
			}
		}
	}
	// Processes the new release no longer has.
	var gone []*supervise.Instance
	for _, ps := range old {
		gone = append(gone, ps...)
	}
	clear(old)
	stopParallel(gone)
	publish()
	return nil
}

// startReady starts an instance and waits until it is ready: READY=1, or
// its health check passing. It fails as soon as the process exits, and
// after timeout; either way the instance is stopped.
func (r *appRunner) startReady(s supervise.Spec, timeout time.Duration) (*supervise.Instance, error) {
	inst, err := supervise.Start(s, nil)
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	fail := func(format string, args ...any) (*supervise.Instance, error) {
		inst.Stop(context.Background())
		return nil, fmt.Errorf("%s of %s "+format, append([]any{s.Name(), s.Release}, args...)...)
	}
	for {
		st := inst.Status()
		switch {
		case st.Ready:
			return inst, nil
		case st.Restarts > 0:
			return fail("exited before it was ready: %s", st.LastError)
		}
		select {
		case <-r.ctx.Done():
			return fail("not started: the agent is stopping")
		case <-deadline.C:
			why := string(st.Health)
			if st.LastError != "" {
				why += ": " + st.LastError
			}
			if s.NotifyOnly || (st.Health == health.Unknown && s.Health == nil && s.WaitReady != nil) {
				why = "it never sent READY=1 to $NOTIFY_SOCKET"
			}
			return fail("not ready after %v (%s)", timeout, why)
		case <-r.changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// retire takes an instance out of its owner's rotation, letting its
// in-flight requests finish, and stops it. The stop begins once only
// upgraded connections (WebSockets) and event streams are left, so that
// the app itself can tell those clients to reconnect while the proxy still
// carries them.
func (r *appRunner) retire(o *portOwner, inst *supervise.Instance) {
	if o == nil || o.proxy == nil {
		inst.Stop(context.Background())
		return
	}
	stopped := make(chan struct{})
	stop := func() {
		go func() {
			inst.Stop(context.Background())
			close(stopped)
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), inst.Spec().StopTimeout)
	if err := o.proxy.RemoveThen(ctx, backend(inst.Status()), stop); err != nil {
		r.a.log.Warn("drain cut short", "app", r.name, "instance", inst.Spec().Name(), "err", err)
	}
	cancel()
	<-stopped
}

// sameRun reports whether an instance already runs what s asks for, so a
// rollback leaves the instances that never left the old release alone.
func sameRun(a, b supervise.Spec) bool {
	strip := func(env []string) []string {
		return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "PORT=") })
	}
	return a.Release == b.Release && a.Dir == b.Dir && a.Command == b.Command && slices.Equal(strip(a.Env), strip(b.Env))
}

func stopParallel(ps []*supervise.Instance) {
	done := make(chan struct{}, len(ps))
	for _, p := range ps {
		go func() { p.Stop(context.Background()); done <- struct{}{} }()
	}
	for range ps {
		<-done
	}
}

// tail is ps from i on, empty when i is past its end.
func tail(ps []*supervise.Instance, i int) []*supervise.Instance {
	return ps[min(i, len(ps)):]
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/agent/listenfd"
	"github.com/ferrydeploy/ferry/internal/agent/procinfo"
	"github.com/ferrydeploy/ferry/internal/agent/proxyd"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/desired"
)

// portOwner is the agent's hold on a public port: the socket, which the
// proxy process holds and serves (package proxyd) so that neither outlives
// the other's restart, and the agent's duplicate of it, which handoff
// instances get. Owning the port is what lets an upgrade start the new
// instance before stopping the old one without a moment where nothing
// listens. One socket serves a port through every mode change: proxy and
// handoff instances accept from the same queue while one replaces the
// other.
type portOwner struct {
	port    *proxyd.Port
	process string
	// mode is how new instances of the process are served: proxy or
	// handoff. How a running instance is served is told by servedBy.
	mode string
}

// proxyCallTimeout bounds a request to the proxy process that does not
// wait for a drain.
const proxyCallTimeout = 30 * time.Second

// usesOwner reports whether p's upgrades go through an agent-owned port.
func usesOwner(p ferry.Process) bool {
	return p.Port > 0 && (p.Upgrade == ferry.UpgradeProxy || p.Upgrade == ferry.UpgradeHandoff)
}

// errOwnHolder is a port held by the app's own instances, which bind it
// themselves (a stop-start release before): it is claimed once they stop.
var errOwnHolder = errors.New("held by the app's own instances")

// owner returns the port owner of process p, opening the port on first
// use: what an agent adopting instances (start) serves them through.
func (r *appRunner) owner(p ferry.Process) (*portOwner, error) {
	if !usesOwner(p) {
		return nil, nil
	}
	return r.claim(p)
}

// claim returns the owner of p's port, opening it when the app has none:
// the socket the proxy process already holds (an earlier agent's), or a
// socket an upgrading agent handed this one, or a new one, bound
// exclusively. A port another process listens on is an error naming it,
// wrapping errOwnHolder when the holders are this app's own instances.
func (r *appRunner) claim(p ferry.Process) (*portOwner, error) {
	if o := r.owners[p.Port]; o != nil {
		// The port may pass from one process to another (one renamed):
		// roll refuses a release where two processes claim one port.
		o.process, o.mode = p.Name, p.Upgrade
		return o, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), proxyCallTimeout)
	defer cancel()
	// The proxy process knows each port's app, not its process: which
	// process of the app serves on it is the agent's business.
	port, err := r.a.ports.Open(ctx, p.Port, r.name, r.a.inherited.listener(r.name, p.Name))
	var inUse *proxyd.InUseError
	var owned *proxyd.OwnedError
	if errors.As(err, &inUse) && len(inUse.Holders) > 0 && !r.ownHolders(p.Name, inUse.Holders) {
		if ln := r.strandedSocket(p, inUse.Holders); ln != nil {
			port, err = r.a.ports.Open(ctx, p.Port, r.name, ln)
		}
	}
	switch {
	case errors.As(err, &inUse) && len(inUse.Holders) > 0 && r.ownHolders(p.Name, inUse.Holders):
		return nil, fmt.Errorf("%s: %w: %w", p.Name, err, errOwnHolder)
	case errors.As(err, &inUse):
		return nil, fmt.Errorf("%s: %w: free the port or give %s another one", p.Name, err, p.Name)
	case errors.As(err, &owned):
		return nil, fmt.Errorf("%s: port %d is already the public port of app %s on this host", p.Name, p.Port, owned.Owner)
	case err != nil:
		return nil, fmt.Errorf("%s: port %d: %w", p.Name, p.Port, err)
	}
	o := &portOwner{port: port, process: p.Name, mode: p.Upgrade}
	r.owners[p.Port] = o
	return o, nil
}

// ownHolders reports whether every process in hs belongs to one of the
// running instances of process.
func (r *appRunner) ownHolders(process string, hs []procinfo.Proc) bool {
	own := map[int]bool{}
	for _, inst := range r.procs {
		if pid := inst.Status().PID; pid > 0 && inst.Spec().Process == process {
			for _, m := range supervise.GroupMembers(pid) {
				own[m] = true
			}
		}
	}
	for _, h := range hs {
		if !own[h.PID] {
			return false
		}
	}
	return true
}

// strandedSocket takes back the socket of p's port from handoff instances
// that hold it when neither an agent nor a proxy process does: both were
// killed. Binding a new socket is refused while theirs listens, and they
// are the app's own (their environment carries its run directory and the
// process's name). The socket is taken, not rebound, so that its accept
// queue, and the instances accepting on it, carry on.
func (r *appRunner) strandedSocket(p ferry.Process, hs []procinfo.Proc) net.Listener {
	runDir := filepath.Join(r.dir.Path, "run")
	for _, h := range hs {
		env := procinfo.Environ(h.PID)
		if env[supervise.RunDirEnv] != runDir || env["FERRY_PROCESS"] != p.Name {
			return nil
		}
	}
	for _, h := range hs {
		f, err := procinfo.TakeListener(h.PID, p.Port)
		if err != nil {
			r.a.log.Warn("could not take back the port's socket from its handoff instance", "app", r.name, "port", p.Port, "pid", h.PID, "err", err)
			continue
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err == nil {
			r.a.log.Warn("took back the port's socket from its handoff instance: the proxy process was gone", "app", r.name, "port", p.Port, "pid", h.PID)
			return ln
		}
	}
	return nil
}

// close stops serving the port, lets the requests in flight finish and
// closes the socket, in the proxy process too.
func (o *portOwner) close() {
	ctx, cancel := context.WithTimeout(context.Background(), proxyCallTimeout)
	defer cancel()
	o.port.Close(ctx, 5*time.Second)
}

// servedBy is the owner through which inst gets its requests: the port
// whose proxy has it in rotation, or the port whose socket it was handed;
// nil for an instance that binds its port itself, or has none.
func (r *appRunner) servedBy(inst *supervise.Instance) *portOwner {
	s := inst.Spec()
	for _, o := range r.owners {
		if (s.Wrap != nil && s.Port == o.port.Num) || o.port.Has(backend(inst.Status())) {
			return o
		}
	}
	return nil
}

// gcOwners closes the ports that neither a process of app claims nor a
// running instance is served through.
func (r *appRunner) gcOwners(app *ferry.App) {
	for num, o := range r.owners {
		p := app.Process(o.process)
		if p != nil && usesOwner(*p) && p.Port == num {
			continue
		}
		if slices.ContainsFunc(r.procs, func(inst *supervise.Instance) bool { return r.servedBy(inst) == o }) {
			continue
		}
		o.close()
		delete(r.owners, num)
	}
}

// admit puts a ready instance behind its owner. A proxy-mode instance
// joins the proxy's rotation, and the proxy serves the port (it may not
// have, when the instances before were handoff ones: both then accept on
// the one socket until those stop). For a handoff instance, the proxy
// stops serving the port, once its requests in flight have finished, if
// it did.
func (r *appRunner) admit(o *portOwner, inst *supervise.Instance) error {
	if o == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), proxyCallTimeout+inst.Spec().StopTimeout)
	defer cancel()
	switch o.mode {
	case ferry.UpgradeProxy:
		if err := o.port.Add(ctx, backend(inst.Status())); err != nil {
			return fmt.Errorf("%s: port %d: %w", inst.Spec().Name(), o.port.Num, err)
		}
		if !o.port.Serving() {
			return o.port.Serve(ctx, true, 0)
		}
	case ferry.UpgradeHandoff:
		if o.port.Serving() {
			return o.port.Serve(ctx, false, inst.Spec().StopTimeout)
		}
	}
	return nil
}

// syncOwners makes each port's rotation exactly the app's instances behind
// it, after an agent adopted them: the proxy process kept serving while no
// agent ran, and may still route to an instance the earlier agent was
// replacing when it died.
func (r *appRunner) syncOwners() error {
	ctx, cancel := context.WithTimeout(context.Background(), proxyCallTimeout)
	defer cancel()
	for _, o := range r.owners {
		if o.mode != ferry.UpgradeProxy {
			continue
		}
		var addrs []string
		for _, inst := range r.procs {
			if inst.Spec().Process == o.process {
				addrs = append(addrs, backend(inst.Status()))
			}
		}
		if err := o.port.Sync(ctx, addrs); err != nil {
			return fmt.Errorf("%s: port %d: %w", o.process, o.port.Num, err)
		}
	}
	return nil
}

// adoptee is the status in prev (an earlier agent's) of the process an
// instance of spec s adopts: the last one recorded for its process and
// number. An agent killed while it replaced web.1 recorded both the new
// instance and the old one, in that order, under the release it was
// leaving; the old one fits that release.
func adoptee(prev []supervise.Status, s supervise.Spec) *supervise.Status {
	var old *supervise.Status
	for k := range prev {
		if prev[k].Process == s.Process && prev[k].Instance == s.N {
			old = &prev[k]
		}
	}
	return old
}

// stopUnadopted stops what prev records and start did not adopt: the other
// of two instances recorded for one number, or an instance past the scale.
// Nobody would ever stop it, and in handoff mode it would go on accepting
// on the port. A pid is stopped only while it still names the recorded
// process (its start time) and leads its own process group.
func (r *appRunner) stopUnadopted(specs []supervise.Spec, prev []supervise.Status) {
	adopted := map[*supervise.Status]bool{}
	for _, s := range specs {
		if old := adoptee(prev, s); old != nil {
			adopted[old] = true
		}
	}
	var stray []int
	for k := range prev {
		st := &prev[k]
		if adopted[st] || st.PID <= 0 {
			continue
		}
		if ps, err := procinfo.ReadStat(st.PID); err == nil && ps.StartTicks == st.StartTicks && ps.PGRP == st.PID && ps.State != 'Z' {
			stray = append(stray, st.PID)
		}
	}
	if len(stray) == 0 {
		return
	}
	r.a.log.Warn("stopping instances an earlier agent recorded and this one does not adopt", "app", r.name, "pids", stray)
	supervise.StopGroups(stray, 10*time.Second)
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
		if fresh || s.Port == 0 || s.Port == o.port.Num {
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
		ln := o.port.Listener()
		name := s.Process
		// Every instance serves the one shared socket, so that is the port
		// its health check (and $PORT) names: a check through it reaches
		// whichever instance accepts, so it says that the port answers,
		// not which instance does. The port answers for the old instance
		// too: only the new one's own READY=1 says it is ready.
		s.Port = o.port.Num
		setEnv(&s.Env, "PORT", fmt.Sprint(o.port.Num))
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
//
// Every port the release needs is claimed first, so that a port another
// process holds fails the rollout before anything stops. A change of mode
// between proxy and handoff keeps the port's one socket, served by the old
// and the new instances at once while they overlap; a change of port
// serves the old port until its last instance has gone; a change to or
// from stop-start, where the app binds the port itself, stops the old
// instances before the new ones start.
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
	ports := map[int]string{}
	for _, p := range app.Processes {
		if other, ok := ports[p.Port]; ok && p.Port > 0 {
			return step(ferry.FailConfig, p.Name, fmt.Errorf("processes %s and %s both have port %d: give each its own", other, p.Name, p.Port))
		}
		ports[p.Port] = p.Name
	}
	claims := map[string]*portOwner{}
	claimed := func(o *portOwner) bool {
		for _, c := range claims {
			if c == o {
				return true
			}
		}
		return false
	}
	ownHeld := map[string]bool{}
	for _, p := range app.Processes {
		if !usesOwner(p) {
			continue
		}
		o, err := r.claim(p)
		switch {
		case errors.Is(err, errOwnHolder):
			ownHeld[p.Name] = true
		case err != nil:
			r.gcOwners(app)
			return step(ferry.FailStart, fmt.Sprintf("%s port %d", p.Name, p.Port), fmt.Errorf("%w; nothing was stopped", err))
		default:
			claims[p.Name] = o
		}
	}
	defer r.gcOwners(app)
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
		o := claims[p.Name]
		if ownHeld[p.Name] {
			// The old instances bind the port themselves (upgrade:
			// stop-start): they stop before the port can be the agent's.
			stopParallel(olds)
			olds = nil
			publish()
			if o, err = r.claim(p); err != nil {
				return step(ferry.FailStart, fmt.Sprintf("%s port %d", p.Name, p.Port), err)
			}
		}
		if o == nil {
			// Stopped before their replacements start: first the ports
			// the old instances are served through stop taking requests
			// and let those in flight finish, so that a new instance can
			// bind its port itself.
			for _, inst := range olds {
				if so := r.servedBy(inst); so != nil && !claimed(so) {
					so.close()
					delete(r.owners, so.port.Num)
				}
			}
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
				r.retire(prev)
				publish(tail(olds, k+1)...)
				continue
			}
			if prev != nil && sameRun(prev.Spec(), news[k]) && r.servedBy(prev) == o && sameMode(prev, o.mode) {
				done = append(done, prev)
				continue
			}
			s := news[k]
			if err := r.prepare(o, &s, true); err != nil {
				publish(tail(olds, k)...)
				return err
			}
			inst, err := r.startReady(s, timeout, func(inst *supervise.Instance) string {
				return heldBy(tail(olds, k), o, inst)
			})
			if err != nil {
				publish(tail(olds, k)...)
				return err
			}
			if err := r.admit(o, inst); err != nil {
				inst.Stop(context.Background())
				publish(tail(olds, k)...)
				return err
			}
			done = append(done, inst)
			publish(tail(olds, k)...)
			if prev != nil {
				r.retire(prev)
				publish(tail(olds, k+1)...)
			}
		}
	}
	// Processes the new release no longer has: a port no process claims
	// any more closes (its requests in flight finish first); through one
	// that passed to another process, they drain as any retired instance.
	var gone []*supervise.Instance
	for _, ps := range old {
		gone = append(gone, ps...)
	}
	for _, inst := range gone {
		if so := r.servedBy(inst); so != nil && !claimed(so) {
			so.close()
			delete(r.owners, so.port.Num)
		}
	}
	clear(old)
	var wg sync.WaitGroup
	for _, inst := range gone {
		wg.Go(func() { r.retire(inst) })
	}
	wg.Wait()
	publish()
	return nil
}

// sameMode reports whether inst is served the way mode serves new
// instances: through the shared socket (handoff) or on a port of its own.
func sameMode(inst *supervise.Instance, mode string) bool {
	return (inst.Spec().Wrap != nil) == (mode == ferry.UpgradeHandoff)
}

// heldBy says what the old instances hold that a second instance of the
// process cannot take while they run — a fixed port other than the one
// the agent gave them, an exclusive file lock — when a new instance failed
// to start beside them. It asks the kernel (/proc/net/tcp, /proc/locks),
// not the app's output: which ports and locks the old processes hold is a
// fact, and the new instance's messages are each app's own.
func heldBy(olds []*supervise.Instance, o *portOwner, failed *supervise.Instance) string {
	var newPIDs []int
	if pid := failed.Status().PID; pid > 0 {
		newPIDs = supervise.GroupMembers(pid)
	}
	for _, inst := range olds {
		st := inst.Status()
		if st.PID <= 0 {
			continue
		}
		pids := supervise.GroupMembers(st.PID)
		var held []string
		for _, port := range procinfo.ListeningPorts(pids) {
			if port != st.Port && (o == nil || port != o.port.Num) {
				held = append(held, fmt.Sprintf("port %d", port))
			}
		}
		for _, l := range procinfo.ExclusiveLocks(pids) {
			what := "an exclusive lock on " + l.Path
			if procinfo.HasOpen(newPIDs, l.Path) {
				what += " (which the new instance has open, waiting for it)"
			}
			held = append(held, what)
		}
		if len(held) == 0 {
			continue
		}
		return fmt.Sprintf("; the running %s (pid %d) holds %s, which a second instance cannot take while it runs: "+
			"give process %s `upgrade: stop-start`, so that the old instance stops before the new one starts",
			st.Process+fmt.Sprintf(".%d", st.Instance), st.PID, strings.Join(held, " and "), st.Process)
	}
	return ""
}

// startReady starts an instance and waits until it is ready: READY=1, or
// its health check passing. It fails as soon as the process exits, and
// after timeout; either way the instance is stopped, after explain (when
// set) has had a look at it: what it says is added to the error.
func (r *appRunner) startReady(s supervise.Spec, timeout time.Duration, explain func(*supervise.Instance) string) (*supervise.Instance, error) {
	inst, err := supervise.Start(s, nil)
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	fail := func(format string, args ...any) (*supervise.Instance, error) {
		hint := ""
		if explain != nil {
			hint = explain(inst)
		}
		inst.Stop(context.Background())
		return nil, fmt.Errorf("%s of %s "+format+"%s", append(append([]any{s.Name(), s.Release}, args...), hint)...)
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
			inst.Stop(context.Background())
			return nil, fmt.Errorf("%s of %s not started: the agent is stopping", s.Name(), s.Release)
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
// carries them. An instance no proxy routes to (handoff, stop-start) is
// just stopped: a handoff app drains itself.
func (r *appRunner) retire(inst *supervise.Instance) {
	o := r.servedBy(inst)
	addr := backend(inst.Status())
	if o == nil || !o.port.Has(addr) {
		inst.Stop(context.Background())
		return
	}
	stopped := make(chan struct{})
	var once bool
	stop := func() {
		if once {
			return
		}
		once = true
		go func() {
			inst.Stop(context.Background())
			close(stopped)
		}()
	}
	bound := inst.Spec().StopTimeout
	ctx, cancel := context.WithTimeout(context.Background(), bound+proxyCallTimeout)
	if err := o.port.Remove(ctx, addr, bound, stop); err != nil {
		r.a.log.Warn("drain cut short", "app", r.name, "instance", inst.Spec().Name(), "err", err)
	}
	cancel()
	stop() // when the proxy process never said the instance was quiet
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

// Package agent is ferry's host agent: it watches this host's desired state,
// installs the releases it names through the content-addressed cache and the
// installer, supervises their processes, checks their health, goes back to
// the last healthy release when a new one fails, and reports what it did in
// state.json and on a local unix socket.
package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/agent/cache"
	"github.com/ferrydeploy/ferry/internal/agent/logfile"
	"github.com/ferrydeploy/ferry/internal/agent/notify"
	"github.com/ferrydeploy/ferry/internal/agent/proxyd"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// Config is how an agent runs.
type Config struct {
	Name    string // this host's name in status; default the hostname
	Root    string
	Desired string // path or URL of the desired-state document
	// Source, when set, is where desired states come from instead of
	// Desired: the control server's blocking queries.
	Source Source
	// Report, when set, is called with the agent's state after changes
	// and at least every ReportEvery (the server's heartbeat).
	Report      func(ctx context.Context, st api.HostReport) error
	ReportEvery time.Duration
	Poll        time.Duration // how often a URL is polled
	Registry    fetch.Registry
	Fetch       fetch.Options
	CacheMax    int64 // bytes of artifacts the cache keeps; 0 is the cache's default
	Log         logfile.Options
	Backoff     supervise.Backoff
	// MinUptime is how long a process without a health check must run to
	// count as healthy; 0 is supervise's default.
	MinUptime time.Duration
	// HealthTimeout bounds how long a new release has to become healthy
	// when its ferry.yaml sets no deploy.health_timeout.
	HealthTimeout time.Duration
	Limits        artifact.Limits
	Logger        *slog.Logger
	// Self is the ferry binary: the proxy process that holds the public
	// ports runs it (package proxyd), and handoff-mode instances start
	// through it (package listenfd). Without it no port can be owned.
	Self string
	// StopOnExit stops the apps when Run returns, instead of leaving them
	// for the next agent: for ferry dev, where nothing comes next.
	StopOnExit bool
	// TrustedKeys, when set, are the only keys whose signed releases the
	// agent runs; it refuses an unsigned release, or one signed by another
	// key, says why, and keeps running what it runs.
	TrustedKeys []ed25519.PublicKey
}

// Agent converges one host to its desired state.
type Agent struct {
	cfg   Config
	cache *cache.Cache
	log   *slog.Logger

	mu        sync.Mutex // guards st and apps
	st        *State
	apps      map[string]*appRunner
	notify    *notify.Listener
	dirty     chan struct{}
	reported  chan struct{} // nudges reportLoop
	upgrade   chan struct{}
	inherited *inherited // sockets an upgrading agent handed this one
	ports     *proxyd.Client
	applied   chan string // app names, after each deploy attempt; for tests and benchmarks
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Agent, error) {
	if cfg.Root == "" {
		return nil, errors.New("agent: no root directory")
	}
	if cfg.Desired == "" && cfg.Source == nil {
		return nil, errors.New("agent: no desired state: give --desired PATH_OR_URL or --server URL")
	}
	if cfg.ReportEvery <= 0 {
		cfg.ReportEvery = 5 * time.Second
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	cfg.Root = root
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.Registry == nil {
		cfg.Registry = fetch.NewRegistry()
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = time.Minute
	}
	if cfg.Limits == (artifact.Limits{}) {
		cfg.Limits = artifact.DefaultLimits
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:   cfg,
		log:   cfg.Logger,
		apps:  map[string]*appRunner{},
		dirty: make(chan struct{}, 1),
		cache: &cache.Cache{Dir: filepath.Join(root, CacheDir), MaxBytes: cfg.CacheMax, Registry: cfg.Registry, Fetch: cfg.Fetch, Logger: cfg.Logger},
	}
	return a, nil
}

// Run converges until ctx is done. Stopping the agent leaves the apps
// running: the next agent adopts them. An upgrade (Config.Upgrade, or POST
// /v1/upgrade on the status socket) hands everything to a new agent binary
// and returns nil once it serves.
func (a *Agent) Run(ctx context.Context) error {
	root := a.cfg.Root
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	// apps/ may be passed through (an app's user reaches its own
	// directory) but not listed; each app's directory is its group's alone.
	apps := filepath.Join(root, AppsDir)
	if err := os.MkdirAll(apps, 0o711); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := os.Chmod(apps, 0o711); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	in, err := takeInherited()
	if err != nil {
		return err
	}
	a.inherited = in
	unlock, err := lockWaiting(ctx, filepath.Join(root, LockFile), in != nil)
	if err != nil {
		return fmt.Errorf("agent: another agent runs on %s: %w", root, err)
	}
	var once onceFuncs
	defer once.run("unlock", unlock)
	prev, err := ReadState(root)
	if err != nil {
		return err
	}
	a.stopOrphans(prev)
	// The public ports live in the proxy process, which an earlier agent
	// may have left serving them.
	a.ports = proxyd.NewClient(proxyd.Options{Root: root, Self: a.cfg.Self, LogLevel: logLevel(a.log), Logger: a.log.With("part", "proxy-client")})
	defer once.run("ports", a.ports.Close)
	if _, err := a.ports.Connect(ctx); err != nil {
		a.log.Warn("proxy process", "err", err)
	}
	// Instances say READY=1 here; the sender's pid is checked.
	a.notify, err = notify.Listen(filepath.Join(root, NotifySocket))
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer once.run("notify", func() { a.notify.Close() })
	a.st = &State{Host: a.cfg.Name, Agent: os.Getpid(), Desired: a.cfg.Desired, Apps: map[string]*AppState{}}
	for _, name := range slices.Sorted(maps.Keys(prev.Apps)) {
		a.runner(name).resume(prev.Apps[name])
	}
	// What an earlier agent left open for apps that no longer run here.
	if err := a.ports.Retain(ctx); err != nil {
		a.log.Warn("proxy process: closing ports no app claims", "err", err)
	}
	srv, err := a.serveStatus()
	if err != nil {
		return err
	}
	defer once.run("status", func() { srv.Close() })
	a.inherited.serving()

	// Everything below stops before the state is written for the last time.
	bg, stopBG := context.WithCancel(ctx)
	var bgDone sync.WaitGroup
	if a.cfg.Report != nil {
		bgDone.Go(func() { a.reportLoop(bg) })
	}
	bgDone.Go(func() { a.writeStates(bg) })
	a.markDirty()

	docs := make(chan *desired.Doc, 1)
	bgDone.Go(func() {
		watch := a.cfg.Source
		if watch == nil {
			watch = fileOrURL{loc: a.cfg.Desired, opt: desired.Options{Poll: a.cfg.Poll, Logger: a.log}}
		}
		watch.Watch(bg, func(d *desired.Doc, err error) {
			a.mu.Lock()
			if err != nil {
				a.st.Error = err.Error()
			} else {
				a.st.Error = ""
			}
			a.mu.Unlock()
			a.markDirty()
			if err != nil {
				a.log.Warn("desired state", "err", err)
				return
			}
			select { // only the newest document matters
			case <-docs:
			default:
			}
			docs <- d
		})
	})
	stop := func() error {
		stopBG()
		bgDone.Wait()
		if a.cfg.StopOnExit {
			a.stopAll()
		} else {
			a.detachAll()
		}
		return a.flush()
	}
	for {
		select {
		case d := <-docs:
			a.converge(d)
		case <-a.upgradeRequests():
			if err := stop(); err != nil {
				return err
			}
			once.run("status", func() { srv.Close() })
			once.run("notify", func() { a.notify.Close() })
			once.run("unlock", unlock)
			// The ports stay with the proxy process; the new agent finds
			// them there.
			once.run("ports", a.ports.Close)
			if err := a.handOver(ctx); err != nil {
				return fmt.Errorf("%w; the apps keep running and the next agent adopts them", err)
			}
			a.log.Info("upgrade: the new agent serves; exiting")
			return nil
		case <-ctx.Done():
			err := stop()
			if a.cfg.StopOnExit {
				a.closeOwners()
			}
			return err
		}
	}
}

// onceFuncs runs each named cleanup once, whether early or deferred.
type onceFuncs map[string]bool

func (o *onceFuncs) run(name string, f func()) {
	if *o == nil {
		*o = onceFuncs{}
	}
	if (*o)[name] {
		return
	}
	(*o)[name] = true
	f()
}

// upgradeRequests delivers SIGHUP-style upgrade requests.
func (a *Agent) upgradeRequests() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.upgrade == nil {
		a.upgrade = make(chan struct{}, 1)
	}
	return a.upgrade
}

// Upgrade asks the running agent to hand over to a new binary at
// Config.Self.
func (a *Agent) Upgrade() {
	a.upgradeRequests()
	a.mu.Lock()
	ch := a.upgrade
	a.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

// converge hands each app its desired entry; apps no longer desired stop.
func (a *Agent) converge(d *desired.Doc) {
	a.mu.Lock()
	names := slices.Collect(maps.Keys(a.apps))
	a.mu.Unlock()
	for name, app := range d.Apps {
		a.runner(name).send(&app)
	}
	for _, name := range names {
		if _, ok := d.Apps[name]; !ok {
			a.runner(name).send(nil)
		}
	}
}

func (a *Agent) runner(name string) *appRunner {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.apps[name]
	if !ok {
		r = newRunner(a, name)
		a.apps[name] = r
		a.st.Apps[name] = &AppState{State: AppStopped}
		go r.loop()
	}
	return r
}

// detachAll stops every app's worker and leaves its processes running;
// the ports stay open.
func (a *Agent) detachAll() {
	a.mu.Lock()
	rs := slices.Collect(maps.Values(a.apps))
	a.mu.Unlock()
	for _, r := range rs {
		r.close()
	}
}

// stopAll stops every app's worker and processes.
func (a *Agent) stopAll() {
	for _, r := range a.runners() {
		r.cancel()
		<-r.done
		r.stopAll()
	}
}

// closeOwners closes every port the agent owns, in the proxy process too:
// for an agent whose apps stop with it. Otherwise the ports outlive the
// agent in the proxy process, as the apps do.
func (a *Agent) closeOwners() {
	for _, r := range a.runners() {
		r.closeOwners()
	}
}

// logLevel is the least level log writes, for the proxy process to log
// alike.
func logLevel(log *slog.Logger) string {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if log.Enabled(context.Background(), l) {
			return l.String()
		}
	}
	return slog.LevelError.String()
}

func (a *Agent) runners() []*appRunner {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Collect(maps.Values(a.apps))
}

// Snapshot is the agent's current state, with live process statuses.
func (a *Agent) Snapshot() *State {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := *a.st
	st.Updated = time.Now().UTC()
	st.Apps = map[string]*AppState{}
	for name, as := range a.st.Apps {
		c := *as
		if r := a.apps[name]; r != nil {
			c.Processes = r.statuses()
		}
		st.Apps[name] = &c
	}
	return &st
}

func (a *Agent) markDirty() {
	select {
	case a.dirty <- struct{}{}:
	default:
	}
	a.mu.Lock()
	ch := a.reported
	a.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// writeStates writes state.json after changes, at most every 50 ms, so a
// flapping process cannot turn the agent into a disk writer.
func (a *Agent) writeStates(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.dirty:
			if err := a.flush(); err != nil {
				a.log.Error("write state", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (a *Agent) flush() error {
	return writeState(a.cfg.Root, a.Snapshot())
}

// Applied delivers the name of an app after each deploy attempt finishes.
// Tests and benchmarks wait on it; nobody has to read it.
func (a *Agent) Applied() <-chan string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.applied == nil {
		a.applied = make(chan string, 64)
	}
	return a.applied
}

func (a *Agent) notifyApplied(name string) {
	a.mu.Lock()
	ch := a.applied
	a.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- name:
	default:
	}
}

// pruneCache keeps the cache within its bound, never dropping an artifact
// an app runs or was last started from.
func (a *Agent) pruneCache() {
	keep := map[string]bool{}
	a.mu.Lock()
	for _, as := range a.st.Apps {
		keep[as.SHA256] = true
		if as.Spec != nil {
			keep[as.Spec.SHA256] = true
		}
	}
	a.mu.Unlock()
	removed, err := a.cache.Prune(keep)
	if err != nil {
		a.log.Warn("cache prune", "err", err)
	}
	if len(removed) > 0 {
		a.log.Info("cache pruned", "removed", len(removed))
	}
}

// Source delivers desired states: the first, then each change, until ctx
// is done. An error is reported with a nil document and watching goes on.
type Source interface {
	Watch(ctx context.Context, fn func(*desired.Doc, error)) error
}

// fileOrURL is the Source of `ferry agent --desired`.
type fileOrURL struct {
	loc string
	opt desired.Options
}

func (f fileOrURL) Watch(ctx context.Context, fn func(*desired.Doc, error)) error {
	return desired.Watch(ctx, f.loc, f.opt, fn)
}

// reportLoop sends the agent's state to the server after changes (at most
// every 200 ms) and at least every ReportEvery, which is the heartbeat the
// server marks lost hosts by.
func (a *Agent) reportLoop(ctx context.Context) {
	a.mu.Lock()
	if a.reported == nil {
		a.reported = make(chan struct{}, 1)
	}
	changed := a.reported
	a.mu.Unlock()
	tick := time.NewTicker(a.cfg.ReportEvery)
	defer tick.Stop()
	for {
		// A report stuck on a connection a partition left in TCP's
		// retransmission backoff is given up after two heartbeats and sent
		// again on a new one: TestNetworkFaults saw a host report again
		// only 15 s after its link came back.
		rctx, cancel := context.WithTimeout(ctx, max(2*a.cfg.ReportEvery, 10*time.Second))
		if err := a.cfg.Report(rctx, a.Snapshot().Report()); err != nil && ctx.Err() == nil {
			a.log.Warn("report to server", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// stopOrphans stops the processes an earlier agent of this root started
// and was killed before recording: no state names them, so nothing would
// ever stop them, and they may hold what their successor needs (found by
// TestKillAgentAtRandomMoments: a v2 instance left running beside v1).
func (a *Agent) stopOrphans(prev *State) {
	known := map[int]bool{}
	for _, app := range prev.Apps {
		for _, p := range app.Processes {
			known[p.PID] = true
		}
	}
	orphans := supervise.Orphans(filepath.Join(a.cfg.Root, AppsDir)+string(filepath.Separator), known)
	if len(orphans) == 0 {
		return
	}
	a.log.Warn("stopping processes an earlier agent started but never recorded", "pids", orphans)
	supervise.StopGroups(orphans, 10*time.Second)
}

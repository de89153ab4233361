package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/agent/hook"
	"github.com/ferrydeploy/ferry/internal/agent/install"
	"github.com/ferrydeploy/ferry/internal/agent/logship"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/signature"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// appRunner converges one app. Its loop is the only goroutine that changes
// the app's release or processes, so deploys of one app never overlap while
// different apps deploy independently.
type appRunner struct {
	a       *Agent
	name    string
	dir     install.Dir
	mailbox chan *desired.App // newest desired entry; nil means not desired
	changed chan struct{}     // an instance's status changed
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}

	procs  []*supervise.Instance // touched only by loop (and statuses, under a.mu)
	owners map[int]*portOwner    // by port; touched only by loop

	fetching fetchGuard
}

// fetchGuard cancels the download and unpack of a release once a
// different desired entry arrives: over a slow link, the artifact of a
// rollout the server has since rolled back must not hold up (and then
// briefly run instead of) the release it wants now. What comes after the
// unpack — hooks, the switch, the health wait — is not cut short.
type fetchGuard struct {
	mu     sync.Mutex
	latest *desired.App // the newest entry sent
	want   *desired.App // the entry being fetched; nil when none
	cancel context.CancelFunc
}

// sent notes the newest entry and cancels a fetch it supersedes.
func (s *fetchGuard) sent(want *desired.App) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = want
	if s.want != nil && !sameEntry(s.want, want) {
		s.cancel()
	}
}

// start returns the context of a fetch of want, already cancelled when a
// different entry was sent since want, and the func that ends the fetch.
func (s *fetchGuard) start(ctx context.Context, want *desired.App) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.want, s.cancel = want, cancel
	if !sameEntry(s.latest, want) {
		cancel()
	}
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		s.want, s.cancel = nil, nil
		s.mu.Unlock()
		cancel()
	}
}

func sameEntry(a, b *desired.App) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func newRunner(a *Agent, name string) *appRunner {
	ctx, cancel := context.WithCancel(context.Background())
	return &appRunner{
		a:       a,
		name:    name,
		dir:     install.Dir{Path: filepath.Join(a.cfg.Root, AppsDir, name)},
		mailbox: make(chan *desired.App, 1),
		changed: make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		owners:  map[int]*portOwner{},
	}
}

// send replaces whatever desired entry the loop has not picked up yet,
// and cancels the fetch of one it supersedes.
func (r *appRunner) send(want *desired.App) {
	r.fetching.sent(want)
	for {
		select {
		case r.mailbox <- want:
			return
		default:
		}
		select {
		case <-r.mailbox:
		default:
		}
	}
}

// close stops the loop (cancelling a deploy in progress) and leaves the
// processes running, and the ports open, for the next agent.
func (r *appRunner) close() {
	r.cancel()
	<-r.done
	for _, p := range r.procs {
		p.Detach()
	}
}

// closeOwners lets go of the app's ports.
func (r *appRunner) closeOwners() {
	for name, o := range r.owners {
		o.close()
		delete(r.owners, name)
	}
}

// state runs f on the app's state under the agent's lock, then marks the
// state file dirty.
func (r *appRunner) state(f func(as *AppState)) {
	r.a.mu.Lock()
	as := r.a.st.Apps[r.name]
	f(as)
	as.Updated = time.Now().UTC()
	r.a.mu.Unlock()
	r.a.markDirty()
}

func (r *appRunner) snapshot() AppState {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	return *r.a.st.Apps[r.name]
}

// statuses is called with a.mu held.
func (r *appRunner) statuses() []supervise.Status {
	out := make([]supervise.Status, 0, len(r.procs))
	for _, p := range r.procs {
		out = append(out, p.Status())
	}
	return out
}

func (r *appRunner) setProcs(ps []*supervise.Instance) {
	r.a.mu.Lock()
	r.procs = ps
	r.a.mu.Unlock()
	r.a.markDirty()
}

func (r *appRunner) loop() {
	defer close(r.done)
	var retry <-chan time.Time
	var pending *desired.App
	failures := 0
	for {
		select {
		case <-r.ctx.Done():
			return
		case want := <-r.mailbox:
			pending, failures, retry = want, 0, nil
		case <-retry:
			retry = nil
		}
		err := r.apply(pending)
		if r.ctx.Err() != nil {
			return
		}
		// A deploy's buffers (download, decompression, unpack) are garbage
		// now; hand them back to the OS rather than keep an idle agent big.
		debug.FreeOSMemory()
		r.a.notifyApplied(r.name)
		if err != nil {
			// What failed before the switch (a download, a hook) may work
			// next time; a release that failed its health checks is not
			// retried until the desired state changes.
			failures++
			d := min(5*time.Second<<min(failures-1, 6), 5*time.Minute)
			r.a.log.Warn("deploy failed; will retry", "app", r.name, "in", d, "err", err)
			retry = time.After(d)
		}
	}
}

// apply converges the app to want and returns an error worth retrying.
func (r *appRunner) apply(want *desired.App) error {
	cur := r.snapshot()
	if want == nil {
		if len(r.procs) > 0 || cur.State != AppStopped {
			r.stopAll()
			r.closeOwners()
			r.state(func(as *AppState) {
				as.State, as.Error, as.Failure, as.Spec, as.SpecEnv, as.Rejected, as.RejectedEnv = AppStopped, "", nil, nil, "", nil, ""
			})
		}
		// The app's config (secrets included) leaves with it: a host that
		// left the app's group keeps no copy. The releases stay for
		// retention; a new entry renders its env file again.
		if err := os.RemoveAll(filepath.Join(r.dir.Path, "env")); err != nil {
			r.a.log.Warn("could not remove the app's env files", "app", r.name, "err", err)
		}
		return nil
	}
	if cur.runs(want) && len(r.procs) > 0 {
		switch cur.State {
		case AppInstalling:
			// An earlier agent died before it saw this release healthy.
			r.confirm(cur.Release)
		case AppFailed:
			// A newer release failed here and the agent went back to this
			// one, which is desired again (the server rolls back): report
			// what runs, under its own label, instead of the rejected one.
			r.state(func(as *AppState) {
				as.Label, as.Number, as.Rejected, as.RejectedEnv = want.Release, want.Number, nil, ""
			})
			r.confirm(cur.Release)
		}
		return nil
	}
	if cur.rejects(want) {
		return nil
	}
	if err := r.checkSigned(want); err != nil {
		f := &ferry.Failure{Kind: ferry.FailSignature, Message: err.Error()}
		r.state(func(as *AppState) { as.State, as.Error, as.Failure = AppFailed, err.Error(), f; as.reject(want) })
		r.a.log.Error("release refused", "app", r.name, "err", err)
		return nil // the same document will not verify on a retry
	}
	return r.deploy(want)
}

// deployLog collects what one deploy did, for the success and failure
// hooks' stdin.
type deployLog struct{ bytes.Buffer }

func (l *deployLog) printf(format string, args ...any) {
	fmt.Fprintf(l, time.Now().UTC().Format(time.RFC3339)+" "+format+"\n", args...)
}

// deploy installs want's artifact, switches to it, starts its processes and
// waits for them to be healthy; when they are not, it goes back to the last
// healthy release.
func (r *appRunner) deploy(want *desired.App) error {
	ctx := r.ctx
	var dl deployLog
	fail := func(err error) error {
		f := failureOf(err, "")
		r.state(func(as *AppState) { as.State, as.Error, as.Failure = AppFailed, err.Error(), f })
		r.a.log.Error("deploy failed", "app", r.name, "err", err)
		return err
	}
	before := r.snapshot()
	r.state(func(as *AppState) {
		as.State, as.Label, as.Number, as.Error, as.Failure = AppInstalling, want.Release, want.Number, "", nil
	})
	dl.printf("deploying %s sha256:%s", want.Artifact, want.SHA256)
	fctx, fetched := r.fetching.start(ctx, want)
	defer fetched()
	// A fetch that failed because another entry arrived is no failure:
	// the app goes on as it was and the loop takes up the new entry. (One
	// that completed anyway carries on.)
	superseded := func(err error) bool {
		if err == nil || fctx.Err() == nil || ctx.Err() != nil {
			return false
		}
		r.state(func(as *AppState) {
			as.State, as.Label, as.Number, as.Error, as.Failure = before.State, before.Label, before.Number, before.Error, before.Failure
		})
		r.a.log.Info("release superseded before it was installed", "app", r.name, "release", want.Release)
		return true
	}

	path, hit, err := r.a.cache.Get(fctx, want.Artifact, want.SHA256)
	if superseded(err) {
		return nil
	}
	if err != nil {
		return fail(step(ferry.FailFetch, "", err))
	}
	dl.printf("artifact %s (cached: %v)", path, hit)
	app, err := readApp(path)
	if err != nil {
		return fail(step(ferry.FailConfig, "", err))
	}
	if err := checkScale(app, want.Scale); err != nil {
		return fail(step(ferry.FailConfig, "scale", err))
	}
	if err := os.MkdirAll(r.dir.Path, 0o750); err != nil {
		return fail(err)
	}
	unlock, err := r.dir.Lock()
	if err != nil {
		return fail(err)
	}
	defer unlock()
	hookLog := r.openHookLog(want)
	defer hookLog.Close()
	hooks := hook.Runner{Dir: r.dir.Path, Out: io.MultiWriter(&dl, hookLog), Env: []string{"FERRY_APP=" + r.name}}
	if err := hooks.Run(ctx, "pre", app.Hooks.Pre, nil); err != nil {
		return fail(r.failed(ctx, hooks, &dl, step(ferry.FailHook, "pre hook", err)))
	}
	id := r.dir.Find(want.SHA256)
	fresh := id == ""
	if fresh {
		id = r.dir.NextID(want.SHA256)
		f, err := os.Open(path)
		if err != nil {
			return fail(err)
		}
		// Post hooks prepare the release (npm ci, a build step): it stays
		// writable for them, as the agent's user, and is sealed after.
		err = r.dir.Install(fctx, id, want.SHA256, f, install.Options{Limits: r.a.cfg.Limits, Shared: app.Shared, Src: want.Artifact, Writable: len(app.Hooks.Post) > 0})
		f.Close()
		if superseded(err) {
			return nil
		}
		if err != nil {
			return fail(r.failed(ctx, hooks, &dl, step(ferry.FailUnpack, "", err)))
		}
		dl.printf("installed release %s", id)
	}
	fetched()
	rel := r.dir.ReleasePath(id)
	hooks.Dir = rel
	hooks.Env = append(hooks.Env, "FERRY_RELEASE="+releaseName(want, id), "FERRY_RELEASE_ID="+id, "FERRY_RELEASE_DIR="+rel)
	// Hooks run in the release's environment, as its processes do:
	// migrations need DATABASE_URL.
	config, err := r.renderEnv(rel, want, id)
	if err != nil {
		if fresh {
			r.dir.Remove(id)
		}
		return fail(step(ferry.FailConfig, "", err))
	}
	for _, k := range sortedKeys(config) {
		hooks.Env = append(hooks.Env, k+"="+config[k])
	}
	// Post hooks prepare a release once, when it is installed; a release
	// deployed again (a config change) was prepared already, and is
	// read-only.
	if fresh {
		if err := hooks.Run(ctx, "post", app.Hooks.Post, nil); err != nil {
			r.dir.Remove(id)
			return fail(r.failed(ctx, hooks, &dl, step(ferry.FailHook, "post hook", err)))
		}
		if len(app.Hooks.Post) > 0 {
			if err := r.dir.Seal(id); err != nil {
				r.dir.Remove(id)
				return fail(step(ferry.FailUnpack, "", err))
			}
		}
	}
	// Processes that run as their own user read their release through
	// its group; other apps' users cannot.
	if owner, err := appOwner(app); err != nil {
		return fail(step(ferry.FailConfig, "user", err))
	} else if owner != nil {
		if err := r.dir.Grant(id, int(owner.Uid), int(owner.Gid), app.Shared); err != nil {
			return fail(step(ferry.FailUnpack, "", err))
		}
	}

	prev := r.snapshot()
	prevID, prevSpec, prevEnv, lastHealthy := prev.Release, prev.Spec, prev.SpecEnv, prev.LastHealthy
	timeout := app.Deploy.HealthTimeout
	if timeout <= 0 {
		timeout = r.a.cfg.HealthTimeout
	}
	herr := step(ferry.FailStart, "", r.switchTo(app, want, id, timeout))
	r.state(func(as *AppState) { as.Release, as.SHA256 = id, want.SHA256; as.started(want, EnvDigest(want.Env)) })
	if herr == nil {
		dl.printf("switched to %s; waiting for health", id)
		herr = step(ferry.FailHealth, "", r.waitHealthy(ctx, timeout))
	}
	if ctx.Err() != nil {
		return nil // the agent is stopping; the next one carries on
	}
	if herr == nil {
		dl.printf("release %s is healthy", id)
		hooks.Run(ctx, "success", app.Hooks.Success, dl.Bytes())
		r.state(func(as *AppState) {
			as.State, as.Error, as.Failure, as.LastHealthy, as.Rejected, as.RejectedEnv = AppRunning, "", nil, id, nil, ""
		})
		r.prune(app.KeepReleases)
		r.a.pruneCache()
		return nil
	}
	// The release failed its health checks: it is rejected until the
	// desired state changes, and the last healthy release comes back.
	f := failureOf(herr, id)
	herr = fmt.Errorf("release %s: %w", id, herr)
	dl.printf("%v", herr)
	hooks.Run(ctx, "failure", app.Hooks.Failure, dl.Bytes())
	msg := herr.Error()
	if prevID != "" && prevID == lastHealthy && prevID != id && prevSpec != nil {
		if err := r.rollback(prevID, prevSpec, prevEnv); err != nil {
			msg += "; going back to " + prevID + " failed: " + err.Error()
			f.Message += "; going back to " + prevID + " failed: " + err.Error()
		} else {
			msg += "; rolled back to " + prevID
			f.RolledBackTo = prevID
		}
	}
	r.state(func(as *AppState) { as.State, as.Error, as.Failure = AppFailed, msg, f; as.reject(want) })
	r.a.log.Error("release failed", "app", r.name, "err", msg)
	return nil
}

// confirm waits for the adopted release id to be healthy and records
// the outcome.
func (r *appRunner) confirm(id string) {
	err := r.waitHealthy(r.ctx, r.a.cfg.HealthTimeout)
	if r.ctx.Err() != nil {
		return
	}
	r.state(func(as *AppState) {
		if err != nil {
			as.State, as.Error, as.Failure = AppFailed, fmt.Sprintf("release %s: %v", id, err), failureOf(err, id)
			return
		}
		as.State, as.Error, as.Failure, as.LastHealthy = AppRunning, "", nil, id
	})
}

// failed runs the failure hooks after err and returns err.
func (r *appRunner) failed(ctx context.Context, hooks hook.Runner, dl *deployLog, err error) error {
	dl.printf("failed: %v", err)
	if app, aerr := r.currentApp(); aerr == nil {
		hooks.Run(ctx, "failure", app.Hooks.Failure, dl.Bytes())
	}
	return err
}

// currentApp is the ferry.yaml of the release current names.
func (r *appRunner) currentApp() (*ferry.App, error) {
	id, err := r.dir.Current()
	if err != nil {
		return nil, err
	}
	return spec.Load(r.dir.ReleasePath(id))
}

// rollback goes back to release id, started as spec asked (env: the
// digest of the config spec came with).
func (r *appRunner) rollback(id string, want *desired.App, env string) error {
	app, err := spec.Load(r.dir.ReleasePath(id))
	if err != nil {
		return err
	}
	err = r.switchTo(app, want, id, r.a.cfg.HealthTimeout)
	r.state(func(as *AppState) { as.Release, as.SHA256 = id, want.SHA256; as.started(want, env) })
	if err != nil {
		return err
	}
	return r.waitHealthy(r.ctx, r.a.cfg.HealthTimeout)
}

// switchTo makes id current and rolls the instances over to it.
func (r *appRunner) switchTo(app *ferry.App, want *desired.App, id string, timeout time.Duration) error {
	if err := r.dir.Activate(id); err != nil {
		return err
	}
	return r.roll(app, want, id, timeout)
}

// start starts the instances of release id, adopting the processes prev
// (an earlier agent's statuses) names where they still run, and puts them
// behind their ports.
func (r *appRunner) start(app *ferry.App, want *desired.App, id string, prev []supervise.Status) error {
	specs, err := r.specs(app, want, id, prev)
	if err != nil {
		return err
	}
	var ps []*supervise.Instance
	for _, s := range specs {
		old := adoptee(prev, s)
		o, err := r.owner(*app.Process(s.Process))
		if err == nil {
			err = r.prepare(o, &s, false)
		}
		var p *supervise.Instance
		if err == nil {
			p, err = supervise.Start(s, old)
		}
		if err == nil {
			ps = append(ps, p)
			err = r.admit(o, p)
		}
		if err != nil {
			r.setProcs(ps)
			r.stopAll()
			return err
		}
	}
	r.setProcs(ps)
	err = r.syncOwners()
	r.stopUnadopted(specs, prev)
	return err
}

// stopAll stops every instance, in parallel, each within its stop_timeout.
func (r *appRunner) stopAll() {
	stopParallel(r.procs)
	r.setProcs(nil)
}

// waitHealthy waits until every instance is healthy; it fails early when
// one is crash-looping.
func (r *appRunner) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		bad, all := "", true
		for _, p := range r.procs {
			st := p.Status()
			if st.CrashLoop {
				return step(ferry.FailStart, fmt.Sprintf("%s.%d", st.Process, st.Instance), fmt.Errorf("%s.%d is crash-looping: %s", st.Process, st.Instance, st.LastError))
			}
			if st.Health != health.Healthy {
				all = false
				bad = fmt.Sprintf("%s.%d is %s", st.Process, st.Instance, st.Health)
				if st.LastError != "" {
					bad += ": " + st.LastError
				}
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("not healthy after %v: %s", timeout, bad)
		case <-r.changed:
		}
	}
}

func (r *appRunner) prune(keep int) {
	pr, err := r.dir.Prune(keep)
	if err != nil {
		r.a.log.Warn("retention", "app", r.name, "err", err)
		return
	}
	if err := pr.Err(); err != nil {
		r.a.log.Warn("retention could not remove every old release", "app", r.name, "err", err)
	}
	for _, id := range pr.Removed {
		os.Remove(filepath.Join(r.dir.Path, "env", id))
	}
}

// resume picks up an app from an earlier agent's state: the same release,
// adopting its processes where they still run.
func (r *appRunner) resume(as *AppState) {
	r.state(func(cur *AppState) { *cur = *as; cur.Processes = nil })
	if as.Release == "" || as.Spec == nil || as.State == AppStopped {
		return
	}
	app, err := spec.Load(r.dir.ReleasePath(as.Release))
	if err == nil {
		// state.json holds no config: the release's env file does.
		var want *desired.App
		if want, err = r.withEnvFile(as.Spec, as.Release); err == nil {
			r.state(func(cur *AppState) { cur.Spec = want })
			err = r.start(app, want, as.Release, as.Processes)
		}
	}
	if err != nil {
		r.state(func(cur *AppState) {
			cur.State, cur.Error, cur.Failure = AppFailed, "resume: "+err.Error(), failureOf(err, as.Release)
		})
	}
}

// readApp reads the ferry.yaml (and Procfile) inside an artifact, and
// refuses one built for another os/arch than this agent runs on: before
// anything stops, not when the kernel refuses to exec its binary.
func readApp(path string) (*ferry.App, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	files, err := artifact.ReadFiles(f, spec.FileName, spec.ProcfileName, ferry.MetaPath)
	if err != nil {
		return nil, err
	}
	if b := files[ferry.MetaPath]; b != nil {
		var m ferry.Meta
		if err := json.Unmarshal(b, &m); err == nil && m.OS != "" && (m.OS != runtime.GOOS || m.Arch != runtime.GOARCH) {
			return nil, ferry.Errorf(ferry.EINVALID, "artifact %s (%s %s) was built for %s/%s; this host is %s/%s: build it with ferry build --os %s --arch %s",
				filepath.Base(path), m.App, m.Version, m.OS, m.Arch, runtime.GOOS, runtime.GOARCH, runtime.GOOS, runtime.GOARCH)
		}
	}
	if files[spec.FileName] == nil {
		return nil, ferry.Errorf(ferry.EINVALID, "artifact %s has no %s", filepath.Base(path), spec.FileName)
	}
	return spec.FromFiles(files[spec.FileName], files[spec.ProcfileName])
}

func checkScale(app *ferry.App, scale map[string]int) error {
	var names []string
	for _, p := range app.Processes {
		names = append(names, p.Name)
	}
	for name := range scale {
		if !slices.Contains(names, name) {
			return ferry.Errorf(ferry.EINVALID, "scale: app %s has no process %q (it has: %s)", app.Name, name, strings.Join(names, ", "))
		}
	}
	return nil
}

// checkSigned refuses want unless one of its signatures, by a trusted key,
// covers its record, when the agent trusts only some keys.
func (r *appRunner) checkSigned(want *desired.App) error {
	if len(r.a.cfg.TrustedKeys) == 0 {
		return nil
	}
	n := want.Number
	if n == 0 {
		// A desired-state file written by hand has no number field; its
		// author names the server release a signature covers as "vN".
		var err error
		if n, err = ferry.ParseRelease(want.Release); err != nil {
			return fmt.Errorf("release %q refused: only signed releases run here, and it names no release number", want.Release)
		}
	}
	msg := signature.ReleaseMessage(r.name, n, want.SHA256, want.ConfigRev)
	if err := signature.Verify(r.a.cfg.TrustedKeys, msg, want.Signatures); err != nil {
		return fmt.Errorf("release %s refused: %v; the running release stays", want.Release, err)
	}
	return nil
}

// releaseName is what a person calls the release want names: the
// server's "vN" (or a desired file's label), else the host's id for it.
func releaseName(want *desired.App, id string) string {
	if want.Release != "" {
		return want.Release
	}
	return id
}

// maxHookLog is the size at which an app's hook log is rotated once.
const maxHookLog = 10 << 20

// openHookLog opens the app's hook log, ROOT/apps/APP/hooks.log, for
// appending, after a line naming the deploy: what `ferry logs APP
// --hooks` shows (beside logs/, whose files are the processes'). A log
// that cannot be opened costs the deploy nothing but its record.
func (r *appRunner) openHookLog(want *desired.App) io.WriteCloser {
	path := filepath.Join(r.dir.Path, HookLogName)
	if err := os.MkdirAll(r.dir.Path, 0o750); err != nil {
		r.a.log.Warn("hook log", "app", r.name, "err", err)
		return nopCloser{io.Discard}
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxHookLog {
		os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		r.a.log.Warn("hook log", "app", r.name, "err", err)
		return nopCloser{io.Discard}
	}
	fmt.Fprintf(f, "==== %s deploy %s (sha256 %.12s)\n", time.Now().UTC().Format(time.RFC3339), releaseName(want, want.SHA256), want.SHA256)
	return f
}

// HookLogName is the file in an app's directory its hooks' output goes to.
const HookLogName = logship.HookLog

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

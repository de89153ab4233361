package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/hook"
	"github.com/ferrydeploy/ferry/internal/agent/install"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/manifest/dirsync"
)

// Options are `ferry apply`'s flags, as stretcher's.
type Options struct {
	Retries      int
	RetryWait    time.Duration
	Timeout      time.Duration // bounds fetching src
	MaxBandwidth int64         // bytes per second
	RandomDelay  time.Duration // sleep a random time up to this first
	Limits       artifact.Limits
	Output       io.Writer // the apply log, as it happens
	Registry     fetch.Registry
	HookDir      string // where rsync/mv hooks run; default the working directory
}

// Result says what an apply did.
type Result struct {
	Strategy string
	Release  string // release strategy: the release now current
	Skipped  bool   // the artifact was already current
	Bytes    int64
	Sync     string // a summary of the sync
}

// syncBuffer is the apply log: every log line and hook output, kept for the
// success and failure hooks.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.out != nil {
		b.out.Write(p)
	}
	return len(p), nil
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// Apply deploys m on this host. On failure it runs the failure hooks with
// the log and returns the error; dest is left as it was (rsync and mv:
// when the failure is before the sync; release: always).
func Apply(ctx context.Context, m *Manifest, opt Options) (Result, error) {
	logw := &syncBuffer{out: opt.Output}
	log := slog.New(slog.NewTextHandler(logw, nil))
	a := &applier{m: m, opt: opt, log: log, logw: logw, res: Result{Strategy: m.SyncStrategy}}
	if a.opt.Registry == nil {
		a.opt.Registry = fetch.NewRegistry()
	}
	if a.opt.Limits == (artifact.Limits{}) {
		a.opt.Limits = artifact.DefaultLimits
	}
	a.hooks = hook.Runner{Dir: opt.HookDir, Out: logw}
	err := a.apply(ctx)
	// Success and failure hooks still run when ctx was cancelled.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	if err != nil {
		log.Error("apply failed", "err", err)
		if herr := a.hooks.Run(hctx, "failure", m.Commands.Failure, logw.Bytes()); herr != nil {
			log.Error("failure hook failed", "err", herr)
		}
		return a.res, err
	}
	log.Info("apply succeeded", "strategy", m.SyncStrategy, "dest", m.Dest, "release", a.res.Release)
	if err := a.hooks.Run(hctx, "success", m.Commands.Success, logw.Bytes()); err != nil {
		log.Error("success hook failed", "err", err)
		return a.res, err
	}
	return a.res, nil
}

type applier struct {
	m     *Manifest
	opt   Options
	log   *slog.Logger
	logw  *syncBuffer
	hooks hook.Runner
	res   Result
}

func (a *applier) apply(ctx context.Context) error {
	m := a.m
	if d := a.opt.RandomDelay; d > 0 {
		wait := rand.N(d)
		a.log.Info("random delay", "wait", wait.Round(time.Millisecond))
		if err := fetch.Sleep(ctx, wait); err != nil {
			return err
		}
	}
	if m.Src == "" {
		if err := a.hooks.Run(ctx, "pre", m.Commands.Pre, nil); err != nil {
			return err
		}
		return a.hooks.Run(ctx, "post", m.Commands.Post, nil)
	}
	dest, err := filepath.Abs(m.Dest)
	if err != nil {
		return err
	}
	if m.SyncStrategy == StrategyRelease {
		return a.applyRelease(ctx, install.Dir{Path: dest})
	}
	parent, base := filepath.Dir(dest), filepath.Base(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("dest: %w", err)
	}
	unlock, err := install.LockFile(filepath.Join(parent, "."+base+".ferry-lock"))
	if err != nil {
		return err
	}
	defer unlock()
	archive, _, err := a.download(ctx, parent, "."+base+".ferry-download-*")
	if err != nil {
		return err
	}
	defer archive.Close()
	if err := a.hooks.Run(ctx, "pre", m.Commands.Pre, nil); err != nil {
		return err
	}
	stage, err := os.MkdirTemp(parent, "."+base+".ferry-stage-")
	if err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	defer os.RemoveAll(stage)
	if _, err := artifact.Unpack(ctx, archive, stage, a.opt.Limits); err != nil {
		return err
	}
	if err := os.Chmod(stage, m.DestMode.Mode); err != nil {
		return err
	}
	switch m.SyncStrategy {
	case StrategyMv:
		err = a.syncMv(stage, dest)
	default:
		err = a.syncRsync(stage, dest)
	}
	if err != nil {
		return err
	}
	return a.hooks.Run(ctx, "post", m.Commands.Post, nil)
}

// download fetches src into a temp file in dir (beside dest, so a small
// /tmp never limits artifact size) and returns it open at offset 0 and
// already unlinked: nothing is left behind whatever happens next, and its
// dirty pages are dropped instead of flushed by the release's syncfs.
func (a *applier) download(ctx context.Context, dir, pattern string) (*os.File, fetch.Result, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, fetch.Result{}, fmt.Errorf("download: %w", err)
	}
	os.Remove(f.Name())
	fail := func(err error) (*os.File, fetch.Result, error) {
		f.Close()
		return nil, fetch.Result{}, err
	}
	fctx, cancel := a.fetchContext(ctx)
	defer cancel()
	start := time.Now()
	a.log.Info("fetching", "src", a.m.Src, "max_bandwidth", a.opt.MaxBandwidth)
	res, err := a.opt.Registry.Download(fctx, a.m.Src, f, a.fetchOptions())
	if err != nil {
		return fail(a.fetchErr(ctx, fctx, err))
	}
	a.res.Bytes = res.Bytes
	a.log.Info("fetched", "bytes", res.Bytes, "elapsed", time.Since(start).Round(time.Millisecond), "checksum", "ok")
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, res, nil
}

// fetchContext bounds fetching src by --timeout, with a cause that says so.
func (a *applier) fetchContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.opt.Timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, a.opt.Timeout,
		ferry.Errorf(ferry.EINVALID, "timeout %s reached while fetching src %s", a.opt.Timeout, a.m.Src))
}

func (a *applier) fetchOptions() fetch.Options {
	return fetch.Options{
		Retries: a.opt.Retries, RetryWait: a.opt.RetryWait, MaxBandwidth: a.opt.MaxBandwidth,
		IdleTimeout: time.Minute, Checksum: string(a.m.Checksum), Logger: a.log,
	}
}

// fetchErr prefers the timeout's cause to the bare deadline error.
func (a *applier) fetchErr(ctx, fctx context.Context, err error) error {
	if cause := context.Cause(fctx); cause != nil && ctx.Err() == nil {
		return cause
	}
	return err
}

// streamInstall fetches src and unpacks it as release id at once. The
// stream ends only when the unpack has read its last byte, so --timeout
// bounds both here.
func (a *applier) streamInstall(ctx context.Context, d install.Dir, id, sum string) error {
	fctx, cancel := a.fetchContext(ctx)
	defer cancel()
	start := time.Now()
	a.log.Info("fetching and unpacking", "src", a.m.Src, "release", id, "max_bandwidth", a.opt.MaxBandwidth)
	var st artifact.Stats
	res, err := a.opt.Registry.Stream(fctx, a.m.Src, a.fetchOptions(), func(r io.Reader) (err error) {
		st, err = d.InstallStats(ctx, id, sum, r, install.Options{Limits: a.opt.Limits, Shared: a.m.Shared, Src: a.m.Src})
		return err
	})
	if err != nil {
		return a.fetchErr(ctx, fctx, err)
	}
	a.res.Bytes = res.Bytes
	a.log.Info("fetched", "bytes", res.Bytes, "elapsed", time.Since(start).Round(time.Millisecond), "checksum", "ok")
	a.logUnpacked(id, st)
	return nil
}

func (a *applier) logUnpacked(id string, st artifact.Stats) {
	a.log.Info("unpacked", "release", id, "entries", st.Files, "bytes", st.Bytes,
		"linked_from_current", st.Linked, "linked_bytes", st.LinkedBytes)
}

func (a *applier) syncRsync(stage, dest string) error {
	excl, err := newPathMatcher(a.m, stage)
	if err != nil {
		return err
	}
	st, err := dirsync.Sync(stage, dest, excl)
	if err != nil {
		return err
	}
	a.res.Sync = fmt.Sprintf("%d updated, %d unchanged, %d deleted", st.Updated, st.Unchanged, st.Deleted)
	a.log.Info("synced", "dest", dest, "updated", st.Updated, "unchanged", st.Unchanged, "deleted", st.Deleted)
	return nil
}

// syncMv puts stage in dest's place: an atomic exchange when dest exists,
// so there is no moment without a dest; a rename otherwise.
func (a *applier) syncMv(stage, dest string) error {
	if _, err := os.Lstat(dest); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(stage, dest); err != nil {
			return fmt.Errorf("mv: %w", err)
		}
		a.log.Info("moved into place", "dest", dest)
		return nil
	}
	if err := exchange(stage, dest); err != nil {
		return fmt.Errorf("mv: %w", err)
	}
	a.log.Info("swapped into place", "dest", dest)
	return nil // stage now holds the old tree; the deferred RemoveAll deletes it
}

func (a *applier) applyRelease(ctx context.Context, d install.Dir) error {
	m := a.m
	if err := os.MkdirAll(d.Path, 0o755); err != nil {
		return fmt.Errorf("dest: %w", err)
	}
	unlock, err := d.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Chmod(d.Path, m.DestMode.Mode); err != nil {
		return err
	}
	a.hooks.Dir = d.Path
	sum := strings.ToLower(string(m.Checksum))
	id := ""
	if len(sum) == 64 {
		id = d.Find(sum)
	}
	if a.alreadyCurrent(d, id) {
		return nil
	}
	if id == "" && len(sum) == 64 && len(m.Commands.Pre) == 0 {
		// Nothing has to run between fetching and unpacking, and the
		// checksum names the release: unpack while fetching. Install names
		// the release only after the stream's last Read, which fails when
		// the bytes do not match the checksum.
		id = d.NextID(sum)
		if err := a.streamInstall(ctx, d, id, sum); err != nil {
			return err
		}
	} else if id == "" {
		archive, fres, err := a.download(ctx, filepath.Join(d.Path, ".ferry"), "download-*")
		if err != nil {
			return err
		}
		defer archive.Close()
		sha := fres.SHA256
		if err := a.hooks.Run(ctx, "pre", m.Commands.Pre, nil); err != nil {
			return err
		}
		id = d.Find(sha)
		if a.alreadyCurrent(d, id) {
			return nil
		}
		if id == "" {
			id = d.NextID(sha)
			a.log.Info("unpacking", "release", id)
			st, err := d.InstallStats(ctx, id, sha, archive, install.Options{Limits: a.opt.Limits, Shared: m.Shared, Src: m.Src})
			if err != nil {
				return err
			}
			a.logUnpacked(id, st)
		}
	} else if err := a.hooks.Run(ctx, "pre", m.Commands.Pre, nil); err != nil {
		return err
	}
	a.hooks.Dir = d.ReleasePath(id)
	a.hooks.Env = []string{"FERRY_RELEASE=" + id, "FERRY_RELEASE_DIR=" + d.ReleasePath(id), "FERRY_DEST=" + d.Path}
	if err := a.hooks.Run(ctx, "post", m.Commands.Post, nil); err != nil {
		a.hooks.Dir = d.Path
		if rerr := d.Remove(id); rerr != nil {
			a.log.Warn("could not remove the release that failed its post hook", "release", id, "err", rerr)
		}
		return err
	}
	if err := d.Activate(id); err != nil {
		return err
	}
	a.res.Release = id
	a.log.Info("switched current", "release", id)
	pr, err := d.Prune(m.KeepReleases)
	if err != nil {
		return err
	}
	if len(pr.Removed) > 0 {
		a.log.Info("retention removed old releases", "releases", strings.Join(pr.Removed, ","))
	}
	if perr := pr.Err(); perr != nil {
		a.log.Warn("retention could not remove every old release", "err", perr)
	}
	return nil
}

// alreadyCurrent reports, and records in the result, that release id is
// the one current names, so there is nothing to do.
func (a *applier) alreadyCurrent(d install.Dir, id string) bool {
	if cur, _ := d.Current(); id == "" || id != cur {
		return false
	}
	a.res.Release, a.res.Skipped = id, true
	a.log.Info("already current; nothing to do", "release", id)
	return true
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/server"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
	"github.com/ferrydeploy/ferry/internal/store/blob"
	"github.com/ferrydeploy/ferry/internal/store/dir"
)

// Bench is one run: a server and N agents in this process.
type Bench struct {
	Opt       Options
	N         int
	Dir       string
	Artifacts []Artifact
	Progress  io.Writer

	srv               *server.Server // in-process, without -server-bin
	srvProc, s3Proc   *proc          // with -server-bin, -s3
	url, token, caSHA string
	admin             *client.Client
	log               *slog.Logger
	members           []*member
	changed           chan struct{} // nudged when an agent reports or gets a document

	errN    atomic.Int64
	errMu   sync.Mutex
	errSamp []string
}

// RunResult is what one run measured.
type RunResult struct {
	Agents       int            `json:"agents"`
	Join         time.Duration  `json:"join"`        // every agent joined (api.JoinRequest), -joiners at a time
	ToReported   time.Duration  `json:"to_reported"` // agents started → every one has reported once
	Uploads      []Upload       `json:"uploads"`
	Before       Snapshot       `json:"before"` // every agent up, nothing deployed
	Deploys      []DeployResult `json:"deploys"`
	After        Snapshot       `json:"after"`
	Stop         time.Duration  `json:"stop"`     // cancel → every agent returned, apps stopped (StopOnExit)
	Leftover     int            `json:"leftover"` // processes of ours still alive after the agents stopped (then killed)
	Errors       int64          `json:"errors"`   // failed desired queries and reports, agent side
	ErrorSamples []string       `json:"error_samples,omitempty"`
	Err          string         `json:"err,omitempty"`
}

// Upload is one `ferry publish` of a release's artifact.
type Upload struct {
	Version string        `json:"version"`
	Bytes   int64         `json:"bytes"`
	Took    time.Duration `json:"took"`
}

func (b *Bench) progress(format string, args ...any) {
	fmt.Fprintf(b.Progress, "[%d agents] "+format+"\n", append([]any{b.N}, args...)...)
}

func (b *Bench) errorf(format string, args ...any) {
	b.errN.Add(1)
	b.errMu.Lock()
	if len(b.errSamp) < 10 {
		b.errSamp = append(b.errSamp, fmt.Sprintf(format, args...))
	}
	b.errMu.Unlock()
}

func (b *Bench) nudge() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// until waits for cond, checked on every nudge and every 100 ms.
func (b *Bench) until(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s: not after %v", what, timeout)
		case <-b.changed:
		case <-tick.C:
		}
	}
	return nil
}

// Run starts the server and the agents, deploys each artifact in turn and
// stops everything. The result holds what was measured even on an error.
func (b *Bench) Run(ctx context.Context) (res RunResult, err error) {
	res.Agents = b.N
	defer func() {
		res.Errors, res.ErrorSamples = b.errN.Load(), b.errSamp
		if err != nil {
			res.Err = err.Error()
		}
	}()
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return res, err
	}
	if err := b.checkDisk(); err != nil {
		return res, err
	}
	logf, err := os.Create(filepath.Join(b.Dir, "fleet.log"))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	b.log = slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b.changed = make(chan struct{}, 1)

	data := filepath.Join(b.Dir, "server")
	if b.Opt.ServerData != "" {
		data = fmt.Sprintf("%s.%d", b.Opt.ServerData, b.N)
		if !b.Opt.Keep {
			defer os.RemoveAll(data)
		}
	}
	storeURL := ""
	if b.Opt.S3 {
		var sURL string
		if b.s3Proc, sURL, err = startS3(ctx, filepath.Join(b.Dir, "s3")); err != nil {
			return res, err
		}
		defer b.s3Proc.stop()
		storeURL = sURL
	}
	stopSrv, err := b.startServer(ctx, data, storeURL)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := stopSrv(); serr != nil && err == nil {
			err = fmt.Errorf("server: %w", serr)
		}
	}()
	if b.admin, err = client.New(b.url, b.token, b.caSHA); err != nil {
		return res, err
	}
	b.progress("server %s", b.url)
	for _, a := range b.Artifacts {
		t := time.Now()
		if _, err := b.admin.UploadArtifact(ctx, a.Path, nil); err != nil {
			return res, fmt.Errorf("publish %s: %w", a.Version, err)
		}
		res.Uploads = append(res.Uploads, Upload{Version: a.Version, Bytes: a.Size, Took: time.Since(t)})
	}

	t := time.Now()
	if err := b.join(ctx); err != nil {
		return res, err
	}
	res.Join = time.Since(t)
	b.progress("%d agents joined in %v", b.N, res.Join.Round(time.Millisecond))

	// The agents run until agentsCtx ends; then they stop their apps.
	agentsCtx, stopAgents := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAgents()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		t := time.Now()
		stopAgents()
		for _, m := range b.members {
			if m.done != nil {
				if aerr := <-m.done; aerr != nil {
					b.errorf("%s: agent: %v", m.name, aerr)
				}
			}
		}
		res.Stop = time.Since(t)
		res.Leftover = killDescendants()
	}
	defer stop()
	t = time.Now()
	if err := b.startAgents(agentsCtx); err != nil {
		return res, err
	}
	err = b.until(ctx, 5*time.Minute, "every agent reported", func() bool {
		for _, m := range b.members {
			if !m.report.Load() {
				return false
			}
		}
		return true
	})
	if err != nil {
		return res, err
	}
	res.ToReported = time.Since(t)
	b.progress("every agent reported %v after they started", res.ToReported.Round(time.Millisecond))
	res.Before = snapshot()
	if b.Opt.CPUProfile != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", b.Opt.CPUProfile, b.N))
		if err != nil {
			return res, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return res, err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	deploys := b.Artifacts
	if b.Opt.Redeploy {
		deploys = append(slices.Clone(deploys), b.Artifacts[0])
	}
	for _, a := range deploys {
		d, err := b.deploy(ctx, a)
		res.Deploys = append(res.Deploys, d)
		if err != nil {
			return res, err
		}
		b.progress("%s: all healthy %v after deploy; desired state reached every agent p50 %v p99 %v",
			a.Version, d.ToAllHealthy.Round(time.Millisecond), d.Propagation.P50.Round(time.Microsecond), d.Propagation.P99.Round(time.Microsecond))
	}
	res.After = snapshot()
	stop()
	b.progress("stopped in %v, %d processes left over", res.Stop.Round(time.Millisecond), res.Leftover)
	return res, nil
}

// join registers every agent, as `ferry agent --join` does the first
// time, and makes each its own client with its own credential.
func (b *Bench) join(ctx context.Context) error {
	tok, err := b.admin.CreateJoinToken(ctx, api.JoinTokenRequest{Groups: []string{group}, TTL: time.Hour})
	if err != nil {
		return fmt.Errorf("join token: %w", err)
	}
	anon, err := client.New(b.url, "", b.caSHA)
	if err != nil {
		return err
	}
	b.members = make([]*member, b.N)
	jobs := make(chan int)
	errs := make(chan error, b.Opt.Joiners)
	var wg sync.WaitGroup
	for range b.Opt.Joiners {
		wg.Go(func() {
			for i := range jobs {
				name := fmt.Sprintf("host-%04d", i+1)
				res, err := anon.Join(ctx, api.JoinRequest{Token: tok.Secret, Name: name})
				if err != nil {
					errs <- fmt.Errorf("join %s: %w", name, err)
					return
				}
				c, err := client.New(b.url, res.Secret, b.caSHA)
				if err != nil {
					errs <- err
					return
				}
				b.members[i] = &member{name: res.Host, root: filepath.Join(b.Dir, "agents", name), c: c, b: b,
					delivered: map[string]time.Time{}, downloads: map[string]download{}}
			}
		})
	}
	var ferr error
feed:
	for i := range b.N {
		select {
		case jobs <- i:
		case ferr = <-errs:
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if ferr == nil {
		select {
		case ferr = <-errs:
		default:
		}
	}
	return ferr
}

// startAgents runs every agent, wired to the server as `ferry agent
// --server` wires itself (internal/cli/agentserver.go's serverMode).
func (b *Bench) startAgents(ctx context.Context) error {
	self, _ := os.Executable()
	for _, m := range b.members {
		reg := fetch.NewRegistry()
		src := timedSource{base: m.c.ArtifactSource(), m: m}
		reg["https"], reg["http"] = src, src
		a, err := agent.New(agent.Config{
			Name:          m.name,
			Root:          m.root,
			Desired:       m.c.Server(),
			Source:        m,
			Report:        m.reportFn,
			Registry:      reg,
			CacheMax:      max(int64(b.Opt.CacheMB)<<20, 1), // 1 byte: only the artifacts that run (disk is agents × artifacts)
			HealthTimeout: b.Opt.HealthTimeout,
			Logger:        b.log.With("part", "agent", "host", m.name),
			Self:          self,
			StopOnExit:    true,
		})
		if err != nil {
			return err
		}
		m.done = make(chan error, 1)
		go func() { m.done <- a.Run(ctx) }()
	}
	return nil
}

// checkDisk refuses a run whose agents' copies of the artifacts cannot
// fit: each agent keeps the artifact it runs in its cache and unpacks it
// into a release; during a later deploy it holds the old and the new of
// both, and keeps two releases (keep_releases: 2).
func (b *Bench) checkDisk() error {
	var size int64
	for _, a := range b.Artifacts {
		size = max(size, a.Size)
	}
	copies := int64(min(2*len(b.Artifacts), 5))
	need := int64(b.N)*size*copies + int64(b.N)*(1<<20) + 1<<30
	var st unix.Statfs_t
	if err := unix.Statfs(b.Dir, &st); err != nil {
		return nil
	}
	free := int64(st.Bavail) * st.Bsize
	b.progress("disk: needs about %.1f GiB (%d agents × %d copies of %.1f MiB), %.1f GiB free", gib(need), b.N, copies, float64(size)/(1<<20), gib(free))
	if need > free && !b.Opt.NoDiskCheck {
		return fmt.Errorf("not enough disk under %s: about %.1f GiB needed (%d agents × %d copies of a %.1f MiB artifact), %.1f GiB free; use fewer -deploys, a smaller -artifact-mb, or -no-disk-check",
			b.Dir, gib(need), b.N, copies, float64(size)/(1<<20), gib(free))
	}
	return nil
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// startServer runs the ferry server: in this process, or with -server-bin
// as its own. stop ends it and waits.
func (b *Bench) startServer(ctx context.Context, data, storeURL string) (stop func() error, err error) {
	if storeURL != "" {
		os.Setenv("AWS_ACCESS_KEY_ID", s3Access)
		os.Setenv("AWS_SECRET_ACCESS_KEY", s3Secret)
	}
	if b.Opt.ServerBin != "" {
		// Every agent connects from 127.0.0.1: no per-address cap.
		args := []string{"--host-lost-after", b.Opt.HostLostAfter.String(), "--max-conns-per-ip", "0"}
		if storeURL != "" {
			args = append(args, "--store", storeURL)
		}
		if b.Opt.Direct {
			args = append(args, "--direct-download")
		}
		p, url, token, ca, err := startServer(ctx, b.Opt.ServerBin, data, b.Dir, args)
		if err != nil {
			return nil, err
		}
		b.srvProc, b.url, b.token, b.caSHA = p, url, token, ca
		return func() error { p.stop(); return nil }, nil
	}
	cfg := server.Config{Data: data, Listen: "127.0.0.1:0", HostLostAfter: b.Opt.HostLostAfter, Logger: b.log.With("part", "server"), MaxConnsPerIP: -1}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	st, err := bolt.Open(filepath.Join(data, server.StateFile), bolt.Options{})
	if err != nil {
		return nil, err
	}
	cfg.State = st
	closeStore := func() { st.Close() }
	if storeURL == "" {
		if cfg.Store, err = dir.New(filepath.Join(data, server.ArtifactsDir)); err != nil {
			closeStore()
			return nil, err
		}
	} else {
		bs, err := blob.Open(ctx, storeURL)
		if err != nil {
			closeStore()
			return nil, err
		}
		cfg.Store, closeStore = bs, func() { bs.Close(); st.Close() }
		if b.Opt.Direct {
			cfg.DirectDownload = 10 * time.Minute
		}
	}
	if b.srv, err = server.New(ctx, cfg); err != nil {
		closeStore()
		return nil, err
	}
	b.url, b.token, b.caSHA = b.srv.URL(), b.srv.AdminToken(), b.srv.CASHA256()
	srvCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srvDone := make(chan error, 1)
	go func() { srvDone <- b.srv.Run(srvCtx) }()
	return func() error {
		cancel()
		err := <-srvDone
		closeStore()
		return err
	}, nil
}

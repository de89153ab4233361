package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/logship"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/server"
	"github.com/ferrydeploy/ferry/internal/spec"
)

func newDev(env Env) *cobra.Command {
	var (
		data, appDir, listen string
		once                 bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Try ferry on this machine: a server, an agent and an app, upgraded with zero downtime",
		Long: `Dev runs a control server and one agent on this machine, builds the example app
(or --app DIR) twice, publishes and deploys the first build, then deploys the
second under load and reports how many requests failed (none, with the proxy
that owns the app's port). It prints the URLs of the app and the server and
keeps running until Ctrl-C, which stops the app too.

The server's files (state, artifacts, TLS, admin token) stay in --data, so
the CLI can talk to it while it runs:

  ferry login https://127.0.0.1:7400 --token $(cat DATA/server/admin.token) --ca-sha256 …`,
		Example: `  ferry dev
  ferry dev --app ./myapp --data /tmp/ferry-dev --once`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), env, data, appDir, listen, once)
		},
	}
	cmd.Flags().StringVar(&data, "data", filepath.Join(os.TempDir(), "ferry-dev"), "directory for the server's and the agent's files")
	cmd.Flags().StringVar(&appDir, "app", "examples/hello", "the app to build and deploy (a directory with ferry.yaml)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7400", "the server's address")
	cmd.Flags().BoolVar(&once, "once", false, "exit after the upgrade instead of serving until Ctrl-C")
	return cmd
}

func runDev(ctx context.Context, env Env, data, appDir, listen string, once bool) error {
	say := func(format string, args ...any) { fmt.Fprintf(env.Stdout, "ferry dev: "+format+"\n", args...) }
	app, err := spec.Load(appDir)
	if err != nil {
		return err
	}
	web := app.Process("web")
	for i := range app.Processes {
		if web == nil && app.Processes[i].Port > 0 {
			web = &app.Processes[i]
		}
	}
	logf, err := openDevLog(data)
	if err != nil {
		return err
	}
	defer logf.Close()
	log := slog.New(slog.NewTextHandler(logf, nil))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	srvData := filepath.Join(data, "server")
	if err := os.MkdirAll(srvData, 0o700); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	st, _, err := openServerState(ctx, "", etcdFlags{}, srvData)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer st.Close()
	blobs, closeBlobs, err := openServerStore(ctx, "", srvData)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer closeBlobs()
	srv, err := server.New(ctx, server.Config{Data: srvData, Listen: listen, Logger: log.With("part", "server"), State: st, Store: blobs})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		if err := srv.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("server", "err", err)
		}
	})
	token := srv.AdminToken()
	if token == "" {
		b, err := os.ReadFile(filepath.Join(srvData, server.AdminTokenFile))
		if err != nil {
			return fmt.Errorf("dev: admin token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	admin, err := client.New(srv.URL(), token, srv.CASHA256())
	if err != nil {
		return err
	}
	say("server %s (log: %s)", srv.URL(), logf.Name())

	// The agent, joined to group dev.
	// The agent joins afresh each time (a new server may have been
	// made), taking over the host "dev" an earlier run left.
	join, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{Groups: []string{"dev"}, Replace: "dev"})
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		join, err = admin.CreateJoinToken(ctx, api.JoinTokenRequest{Groups: []string{"dev"}})
	}
	if err != nil {
		return fmt.Errorf("dev: join token: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := agent.Config{Root: filepath.Join(data, "agent"), Name: "dev", Self: self, StopOnExit: true, Logger: log.With("part", "agent")}
	os.Remove(filepath.Join(cfg.Root, credentialFile)) // a new server may have been made: join afresh
	agentClient, err := serverMode(ctx, &cfg, srv.URL(), joinToken{secret: join.Secret}, srv.CASHA256())
	if err != nil {
		return err
	}
	go logship.Serve(ctx, agentClient, filepath.Join(cfg.Root, agent.AppsDir), cfg.Logger)
	ag, err := agent.New(cfg)
	if err != nil {
		return err
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(ctx) }()
	defer func() {
		cancel()
		<-agentDone
	}()
	say("agent %q joined group dev (root %s)", "dev", cfg.Root)

	// Two builds of the app: the second is the upgrade.
	stamp := time.Now().UTC().Format("20060102.150405")
	var builds [2]*artifact.Result
	for k := range builds {
		builds[k], err = artifact.Build(ctx, appDir, artifact.BuildOptions{Version: fmt.Sprintf("dev.%s.%d", stamp, k+1), OutDir: filepath.Join(data, "dist"), Output: logf})
		if err != nil {
			return err
		}
		if _, err := admin.UploadArtifact(ctx, builds[k].Path, nil); err != nil {
			return err
		}
	}
	say("built and published %s %s and %s", app.Name, builds[0].Meta.Version, builds[1].Meta.Version)

	d, err := devDeploy(ctx, admin, app.Name, builds[0].Meta.Version)
	if err != nil {
		return err
	}
	url := ""
	if web != nil {
		url = fmt.Sprintf("http://127.0.0.1:%d/", web.Port)
	}
	say("release v%d of %s is running and healthy: %s", d.Release, app.Name, dash(url))

	var l *devLoad
	if url != "" {
		l = startDevLoad(url)
	}
	d, err = devDeploy(ctx, admin, app.Name, builds[1].Meta.Version)
	if err != nil {
		return err
	}
	if l != nil {
		time.Sleep(300 * time.Millisecond)
		l.stop()
		say("upgraded to v%d under load: %d requests, %d failed, answered by %s", d.Release, l.ok.Load()+l.failed.Load(), l.failed.Load(), l.answered())
		if l.failed.Load() > 0 {
			say("failures: %s", strings.Join(l.errs, "; "))
		}
	} else {
		say("upgraded to v%d", d.Release)
	}
	say("app:    %s", dash(url))
	say("server: %s   (CA sha256 %s)", srv.URL(), srv.CASHA256())
	say("web UI: %s/   (sign in with the token in %s; the certificate is the server's own CA's)", srv.URL(), filepath.Join(data, "server", server.AdminTokenFile))
	say("CLI:    ferry login %s --token $(cat %s) --ca-sha256 %s", srv.URL(), filepath.Join(data, "server", server.AdminTokenFile), srv.CASHA256())
	if l != nil && l.failed.Load() > 0 {
		return fmt.Errorf("dev: %d requests failed during the upgrade", l.failed.Load())
	}
	if once {
		return nil
	}
	say("serving until Ctrl-C")
	select {
	case <-ctx.Done():
	case err := <-agentDone:
		agentDone <- err
		return fmt.Errorf("dev: the agent stopped: %v", err)
	}
	return nil
}

func openDevLog(data string) (*os.File, error) {
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(data, "dev.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
}

// devDeploy deploys version to group dev and waits for the outcome.
func devDeploy(ctx context.Context, c *client.Client, app, version string) (api.Deployment, error) {
	d, err := c.Deploy(ctx, api.DeployRequest{App: app, Group: "dev", Version: version, Strategy: api.StrategyAll, HealthTimeout: time.Minute, WaitLock: time.Minute})
	if err != nil {
		return d, err
	}
	var index uint64
	for {
		switch d.State {
		case api.DeploySucceeded:
			return d, nil
		case api.DeployFailed, api.DeployRolledBack:
			return d, ferry.Errorf(ferry.EHEALTH, "deploy %s %s: %s: %s", app, version, d.State, d.Error)
		}
		d, index, err = c.Deployment(ctx, d.ID, index, 30*time.Second)
		if err != nil {
			return d, err
		}
	}
}

// devLoad sends keep-alive GETs and POSTs to url and counts what failed.
type devLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	by         map[string]int
	done       chan struct{}
	wg         sync.WaitGroup
}

func startDevLoad(url string) *devLoad {
	l := &devLoad{by: map[string]int{}, done: make(chan struct{})}
	c := &http.Client{Timeout: 10 * time.Second}
	for k := range 4 {
		l.wg.Go(func() {
			for {
				select {
				case <-l.done:
					return
				default:
				}
				var resp *http.Response
				var err error
				if k%2 == 0 {
					resp, err = c.Get(url)
				} else {
					req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte("ferry dev")))
					resp, err = c.Do(req)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode >= 500 {
						err = errors.New(resp.Status)
					}
				}
				l.mu.Lock()
				if err != nil {
					l.failed.Add(1)
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err.Error())
					}
				} else {
					l.ok.Add(1)
					l.by[resp.Header.Get("X-Release")]++
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *devLoad) stop() { close(l.done); l.wg.Wait() }

func (l *devLoad) answered() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for rel, n := range l.by {
		if rel == "" {
			rel = "?"
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", rel, n))
	}
	return strings.Join(parts, ", ")
}

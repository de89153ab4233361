// Package server is ferry's control server: the HTTP/JSON API of package
// api, token auth, the artifact upload and download path, agents' blocking
// desired-state queries and reports. What to deploy and who may is decided
// here; the rollout itself (batches, health verdicts, rollback, locks,
// leadership) is package orchestrator's. All of its state lives in a
// state.Store, read and written through package repo, so a restarted server
// carries on where the last one stopped.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/orchestrator"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
	"github.com/ferrydeploy/ferry/internal/store"
	"github.com/ferrydeploy/ferry/internal/tlsca"
)

// Files under Config.Data; see DESIGN.md, "Server files". The state and
// artifact files are where the cli opens its default stores.
const (
	StateFile      = "state.db"
	ArtifactsDir   = "artifacts"
	TLSDir         = "tls"
	AdminTokenFile = "admin.token"
)

// Log keys.
const (
	logApp        = "app"
	logGroup      = "group"
	logHost       = "host"
	logDeployment = "deployment"
	logErr        = "err"
)

// Config configures a Server. State and Store are required: the server
// opens no store of its own (the cli wires bolt or etcd, a directory or a
// bucket). Data is required unless a TLS certificate is given.
type Config struct {
	Data      string // directory of state.db, artifacts/, tls/, admin.token
	Listen    string // default ":7400"
	Advertise string // URL agents and clients reach this server at; default from Listen
	// TLSCert and TLSKey are the operator's own certificate; without them
	// the server makes its own CA under Data/tls.
	TLSCert, TLSKey string
	State           state.Store // the caller opens and closes it
	// Leader elects the one server that drives rollouts when several share
	// State (etcd); nil means this server is the only one.
	Leader Leader
	// SecretsKeyFile holds the age identity that seals config secrets
	// (default Data/secrets.key, made on first start; $FERRY_SECRETS_KEY
	// overrides both). Servers sharing one state need the same key.
	SecretsKeyFile string
	Store          store.Store   // where artifacts are kept
	HostLostAfter  time.Duration // default 30s
	// Retention bounds the deployments and audit events the state keeps
	// (zero values: orchestrator's defaults).
	Retention orchestrator.Retention
	// DirectDownload, when set, sends agents to the store itself for
	// artifacts, with URLs signed for this long, so the server does not
	// carry a big fleet's downloads. The store must sign URLs (URLSigner).
	DirectDownload time.Duration
	Logger         *slog.Logger

	// What one client can hold (see limits.go for the defaults' reasons).
	// MaxConns caps the connections open at once: 0, or more than the
	// open-file limit allows, means that limit less a reserve for files.
	// MaxConnsPerIP caps those from one client address (an IPv6 /64):
	// 0 means DefaultMaxConnsPerIP, less than 0 no cap.
	MaxConns, MaxConnsPerIP int
	// MaxArtifactSize refuses bigger uploads (0: DefaultMaxArtifactSize).
	MaxArtifactSize int64
	// BodyTimeout bounds how long a request body may take to arrive
	// (0: DefaultBodyTimeout); an upload instead may go UploadStall
	// without a byte (0: DefaultUploadStall).
	BodyTimeout, UploadStall time.Duration
}

// Server is a running control server.
type Server struct {
	cfg        Config
	log        *slog.Logger
	st         state.Store
	repo       *repo.Repo
	blobs      store.Store
	signer     URLSigner // the store, when agents download from it directly
	ln         net.Listener
	tls        *tls.Config
	url        string
	caSHA      string
	adminToken string
	mux        http.Handler // the routes, behind securityHeaders
	// desiredMirror answers agents' blocking queries from memory.
	desiredMirror *mirror
	reportW       *reportWriter
	logHub        *logHub
	revoker       *revoker // ends long requests of credentials that end
	heard         sync.Map // host → time.Time of the last report this server received
	sealer        *sealer  // config secrets at rest
	snapshots     sync.Map // config snapshot key → configSnapshot (immutable)

	orch *orchestrator.Orchestrator
	wg   sync.WaitGroup
}

// Leader elects the one server that drives rollouts when several share
// one state: see orchestrator.Leader.
type Leader = orchestrator.Leader

// New checks the state (upgrading the layout an older server left), makes
// the TLS certificate if it must, creates the admin token on first start
// and listens. Serving starts with Run.
func New(ctx context.Context, cfg Config) (s *Server, err error) {
	if cfg.Listen == "" {
		cfg.Listen = ":7400"
	}
	if cfg.HostLostAfter <= 0 {
		cfg.HostLostAfter = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv := &Server{cfg: cfg, log: cfg.Logger, st: cfg.State, blobs: cfg.Store}
	s = srv
	defer func() {
		// srv, not s: a failing return has set s to nil.
		if err != nil {
			srv.close()
		}
	}()
	switch {
	case cfg.State == nil:
		return nil, ferry.Errorf(ferry.EINVALID, "server: no state store given")
	case cfg.Store == nil:
		return nil, ferry.Errorf(ferry.EINVALID, "server: no artifact store given")
	case cfg.Data != "":
		if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	case cfg.TLSCert == "":
		return nil, ferry.Errorf(ferry.EINVALID, "server: no data directory given")
	}
	s.repo = repo.New(s.st)
	if cfg.DirectDownload > 0 {
		if s.signer, err = checkSigner(s.blobs); err != nil {
			return nil, err
		}
	}
	s.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.url = strings.TrimSuffix(cfg.Advertise, "/")
	if s.url == "" {
		s.url = "https://" + advertiseHost(s.ln.Addr())
	}
	if err := s.setupTLS(); err != nil {
		return nil, err
	}
	if s.sealer, err = loadSealer(cfg.SecretsKeyFile, cfg.Data); err != nil {
		return nil, err
	}
	if err := s.bootstrap(ctx); err != nil {
		return nil, err
	}
	if err := s.checkSealer(ctx); err != nil {
		return nil, err
	}
	if err := s.repo.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.orch = orchestrator.New(orchestrator.Config{
		Repo: s.repo, Logger: s.log, HostLostAfter: cfg.HostLostAfter, Leader: cfg.Leader, Heard: s.heardAt, Retention: cfg.Retention,
		Audit: func(ctx context.Context, ev api.AuditEvent) { s.audit(ctx, nil, ev) },
	})
	s.desiredMirror = newMirror(s.st, prefixDesired)
	s.reportW = newReportWriter(s.repo)
	s.logHub = newLogHub()
	s.revoker = newRevoker(s.st)
	s.routes()
	return s, nil
}

// advertiseHost is host:port of a listening address, with a name others can
// reach when it listens on every interface.
func advertiseHost(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		} else {
			host = "localhost"
		}
	}
	return net.JoinHostPort(host, port)
}

func (s *Server) setupTLS() error {
	if s.cfg.TLSCert != "" || s.cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return ferry.WrapError(ferry.EINVALID, err, "server: --tls-cert/--tls-key")
		}
		s.tls = tlsca.ServerConfigFor(cert)
		return nil
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	if host, _, err := net.SplitHostPort(strings.TrimPrefix(s.url, "https://")); err == nil {
		hosts = append(hosts, host)
	}
	if host, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && host != "" {
		hosts = append(hosts, host)
	}
	files, err := tlsca.Ensure(filepath.Join(s.cfg.Data, TLSDir), hosts)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if s.tls, err = tlsca.ServerConfig(files); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.caSHA = files.CASHA256
	return nil
}

// URL is where clients and agents reach the server.
func (s *Server) URL() string { return s.url }

// CASHA256 is the hex sha256 of the server's CA certificate, which agents
// and the CLI pin; "" when the operator gave their own certificate.
func (s *Server) CASHA256() string { return s.caSHA }

// AdminToken is the admin token made on first start; "" on later starts.
func (s *Server) AdminToken() string { return s.adminToken }

// Run serves until ctx is done, resuming the rollouts a previous server
// left running. Rollouts stop with ctx and are resumed by the next Run on
// the same state. The stores stay open: their opener closes them after.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	total, perAddr, clamped := connCaps(s.cfg.MaxConns, s.cfg.MaxConnsPerIP, fdLimit())
	if clamped {
		s.log.Warn("--max-conns is more than the open-file limit allows; raise that limit (ulimit -n, systemd's LimitNOFILE=) to use it",
			"max_conns", s.cfg.MaxConns, "using", total, "nofile", fdLimit())
	}
	ln := newConnLimiter(s.ln, total, perAddr, s.log)
	srv := &http.Server{
		// Headers within 10 s, bodies within the body timeout: a client
		// trickling either gives its connection back soon after.
		Handler:           s.limitBodies(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idleTimeout,
		// Requests end with ctx, so blocking queries do not hold shutdown.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, s.tls)) }()
	s.log.Info("serving", "url", s.url, "listen", s.ln.Addr().String(), "max_conns", total, "max_conns_per_ip", perAddr, "max_artifact_size", s.cfg.maxArtifactSize())
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.orch.Run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.desiredMirror.run(ctx, func(err error) { s.log.Warn("desired-state mirror", logErr, err) })
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.reportW.run(ctx)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.revoker.run(ctx, func(err error) { s.log.Warn("token mirror", logErr, err) })
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	s.wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) close() {
	if s.ln != nil {
		s.ln.Close()
	}
}

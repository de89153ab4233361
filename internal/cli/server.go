package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/internal/orchestrator"
	"github.com/ferrydeploy/ferry/internal/server"
)

func newServer(env Env) *cobra.Command {
	var (
		cfg       server.Config
		logLevel  string
		stateURL  string
		storeURL  string
		ef        etcdFlags
		direct    bool
		signedTTL time.Duration
		perIP     int
		maxUpload string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control server: API, orchestrator, artifact store",
		Long: `The control server keeps the desired state of every host (an embedded bbolt
file, DIR/state.db), stores artifacts (DIR/artifacts), and rolls releases out
to groups of hosts in health-gated batches under a per app × group lock,
rolling back automatically when a host fails.

--state etcd://HOST:2379,… keeps the state in etcd instead, under
--etcd-prefix: then any number of servers can share it, each serving the API
and agents, and one of them, elected through etcd, drives the rollouts (another
takes over within seconds when it dies). Give every such server the same TLS
files (copy DIR/tls, or --tls-cert/--tls-key), the same secrets key (copy
DIR/secrets.key, or --secrets-key-file) and the same artifact store.
'ferry server migrate' moves a single-server state into etcd.

On first start it makes a TLS CA and certificate (DIR/tls; agents pin the CA
by its sha256) and an admin token (DIR/admin.token, mode 0600), and prints
the token and how to log in and join an agent. --tls-cert/--tls-key use the
operator's own certificate instead.

--store keeps artifacts in a bucket instead: s3://bucket/prefix?region=… (any
S3-compatible server with endpoint=…&use_path_style=true) or gs://bucket/prefix,
under artifacts/<app>/<sha256>.tar.zst; credentials come from the cloud SDKs'
usual places (AWS_* or ~/.aws, instance roles; GOOGLE_APPLICATION_CREDENTIALS
or the metadata server), never from flags. With --direct-download agents fetch
artifacts straight from the bucket with short-lived signed URLs the server
hands out, so the server does not carry a big fleet's downloads.

What one client can hold is bounded: request headers must arrive within 10 s
and a request body within 30 s (an upload may take longer while its bytes
keep coming); one client address (an IPv6 /64) may hold --max-conns-per-ip
connections and all clients together --max-conns, at most what the open-file
limit allows less a quarter for files. An agent holds three or four
connections: raise --max-conns-per-ip when many agents share one NAT address
or reach the server through a proxy.`,
		Example: `  ferry server --data /var/lib/ferry-server --listen :7400
  ferry server --data ./srv --listen 127.0.0.1:7400 --advertise https://deploy.example.com:7400
  ferry server --data /var/lib/ferry-server --state etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
  ferry server --data /var/lib/ferry-server --store 's3://artifacts/ferry?region=eu-west-1' --direct-download
  ferry server --data /var/lib/ferry-server --store gs://my-artifacts/ferry`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Data == "" {
				return usageError{fmt.Errorf("--data is required: the directory the server keeps its state, artifacts and TLS files in")}
			}
			if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
				return usageError{fmt.Errorf("--tls-cert and --tls-key go together")}
			}
			if cfg.Retention.Deployments <= 0 || cfg.Retention.AuditEvents <= 0 {
				return usageError{fmt.Errorf("--keep-deployments %d, --keep-audit-events %d: want positive numbers", cfg.Retention.Deployments, cfg.Retention.AuditEvents)}
			}
			if cfg.MaxConns < 0 {
				return usageError{fmt.Errorf("--max-conns %d: want a positive number, or 0 for what the open-file limit allows", cfg.MaxConns)}
			}
			switch {
			case perIP < 0:
				return usageError{fmt.Errorf("--max-conns-per-ip %d: want a positive number, or 0 for no per-address cap", perIP)}
			case perIP == 0:
				cfg.MaxConnsPerIP = -1
			default:
				cfg.MaxConnsPerIP = perIP
			}
			n, err := parseBytes(maxUpload)
			if err != nil || n <= 0 {
				return usageError{fmt.Errorf("--max-artifact-size %q: want a positive size like 2GiB or 500MB", maxUpload)}
			}
			cfg.MaxArtifactSize = n
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)}
			}
			cfg.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl}))
			if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
				return fmt.Errorf("server: %w", err)
			}
			st, es, err := openServerState(cmd.Context(), stateURL, ef, cfg.Data)
			if err != nil {
				return err
			}
			defer st.Close()
			cfg.State = st
			if es != nil {
				cfg.Leader = es.Election("rollouts", campaignerID())
			}
			bs, closeStore, err := openServerStore(cmd.Context(), storeURL, cfg.Data)
			if err != nil {
				return err
			}
			defer closeStore()
			cfg.Store = bs
			if direct {
				if signedTTL <= 0 {
					return usageError{fmt.Errorf("--signed-url-ttl must be positive")}
				}
				cfg.DirectDownload = signedTTL
			}
			srv, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			printWelcome(env, srv)
			return srv.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Data, "data", "", "directory of state.db, artifacts/, tls/ and admin.token")
	f.StringVar(&cfg.Listen, "listen", ":7400", "address to serve HTTPS on")
	f.StringVar(&cfg.Advertise, "advertise", "", "URL agents and clients reach this server at (default from --listen and the host name)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve instead of the server's own CA")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM key of --tls-cert")
	f.DurationVar(&cfg.HostLostAfter, "host-lost-after", 30*time.Second, "mark a host lost when it has not reported for this long")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cfg.Retention.DeploymentsFor, cfg.Retention.AuditFor = orchestrator.DefaultKeepFor, orchestrator.DefaultKeepFor
	f.IntVar(&cfg.Retention.Deployments, "keep-deployments", orchestrator.DefaultKeepDeployments, "ended deployments kept per app × group")
	f.Var(dayDuration{&cfg.Retention.DeploymentsFor}, "keep-deployments-for", fmt.Sprintf("how long an ended deployment is kept, as 400d or 9600h (the newest %d of each app × group stay)", orchestrator.MinKeepDeployments))
	f.Var(dayDuration{&cfg.Retention.AuditFor}, "keep-audit", "how long an audit event is kept, as 400d or 9600h")
	f.IntVar(&cfg.Retention.AuditEvents, "keep-audit-events", orchestrator.DefaultKeepAuditEvents, "most audit events kept")
	f.StringVar(&cfg.SecretsKeyFile, "secrets-key-file", "", "age identity that encrypts config secrets (default DATA/secrets.key, made on first start; $FERRY_SECRETS_KEY overrides)")
	f.StringVar(&storeURL, "store", "", "artifact store: s3://bucket[/prefix]?region=… (endpoint=…&use_path_style=true for S3-compatible servers), gs://bucket[/prefix] or file:///dir (default DATA/artifacts)")
	f.BoolVar(&direct, "direct-download", false, "agents download artifacts straight from the --store bucket with signed URLs")
	f.DurationVar(&signedTTL, "signed-url-ttl", 10*time.Minute, "how long a --direct-download URL is valid")
	f.StringVar(&stateURL, "state", "", "state store: bolt:///path/state.db or etcd://HOST:2379,… (default bolt at DATA/state.db)")
	f.IntVar(&cfg.MaxConns, "max-conns", 0, "most connections open at once (0: what the open-file limit allows, less a quarter kept for files)")
	f.IntVar(&perIP, "max-conns-per-ip", server.DefaultMaxConnsPerIP, "most connections one client address (an IPv6 /64) may hold open; 0: no cap")
	f.StringVar(&maxUpload, "max-artifact-size", "2GiB", "refuse uploads of artifacts bigger than this (413)")
	ef.add(f)
	cmd.AddCommand(newServerMigrate(env))
	return cmd
}

// printWelcome tells the operator, once, the admin token and how to use it.
func printWelcome(env Env, srv *server.Server) {
	tok := srv.AdminToken()
	if tok == "" {
		return
	}
	pin := ""
	if h := srv.CASHA256(); h != "" {
		pin = " --ca-sha256 " + h
	}
	fmt.Fprintf(env.Stdout, `ferry server: first start. The admin token (also in %s, mode 0600; shown only now):

  %s

Log in from your machine:

  ferry login %s --token %s%s

Make a join token for a group, then start an agent on each host of it:

  ferry agent join-token --group prod
  ferry agent --server %s --join JOIN_TOKEN%s --root /var/lib/ferry --name $(hostname)

`, server.AdminTokenFile, tok, srv.URL(), tok, pin, srv.URL(), pin)
}

// dayDuration is a duration flag that also takes days ("400d"), the unit
// retention is thought in; it must be positive.
type dayDuration struct{ d *time.Duration }

func (f dayDuration) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	if *f.d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", *f.d/(24*time.Hour))
	}
	return f.d.String()
}

func (f dayDuration) Set(s string) error {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return fmt.Errorf("%q: want a number of days (400d) or a duration (9600h)", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("%q: want a number of days (400d) or a duration (9600h)", s)
		}
	}
	if d <= 0 {
		return fmt.Errorf("%q: want a positive age", s)
	}
	*f.d = d
	return nil
}

func (dayDuration) Type() string { return "age" }

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// credentialFile keeps an agent's own credential after it joined.
const credentialFile = "credential.json"

// agentCredential is what an agent keeps in ROOT/credential.json (0600).
type agentCredential struct {
	Server   string `json:"server"`
	CASHA256 string `json:"ca_sha256"`
	Host     string `json:"host"`
	Secret   string `json:"secret"`
}

// joinServer returns the agent's client of the server: from the stored
// credential, or by joining with token (and then storing it).
func joinServer(ctx context.Context, root, server, token, caSHA256, name string, log *slog.Logger) (*client.Client, string, error) {
	path := filepath.Join(root, credentialFile)
	b, err := os.ReadFile(path)
	if err == nil {
		var cred agentCredential
		if err := json.Unmarshal(b, &cred); err != nil {
			return nil, "", fmt.Errorf("agent: %s: %w", path, err)
		}
		if server == "" || server == cred.Server {
			c, err := client.New(cred.Server, cred.Secret, cred.CASHA256)
			if err != nil {
				// e.g. an http:// address stored before ferry refused them.
				return nil, "", fmt.Errorf("agent: the credential in %s: %w; join again with --server https://HOST:7400 --join TOKEN", path, err)
			}
			return c, cred.Host, nil
		}
		log.Info("the server changed; joining again", "was", cred.Server, "now", server)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("agent: %w", err)
	}
	if server == "" {
		return nil, "", usageError{errors.New("--server is required (with --join TOKEN --ca-sha256 HASH the first time)")}
	}
	if token == "" {
		return nil, "", usageError{fmt.Errorf("this agent has not joined %s yet: give --join TOKEN (ferry agent join-token --group G prints one) and --ca-sha256", server)}
	}
	if caSHA256 == "" {
		log.Warn("no --ca-sha256: trusting the system's certificate authorities for " + server)
	}
	anon, err := client.New(server, "", caSHA256)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("--server: %w", err)}
	}
	res, err := anon.Join(ctx, api.JoinRequest{Token: token, Name: name})
	if err != nil {
		return nil, "", fmt.Errorf("agent: join %s: %w", server, err)
	}
	cred := agentCredential{Server: server, CASHA256: caSHA256, Host: res.Host, Secret: res.Secret}
	b, _ = json.MarshalIndent(cred, "", "  ")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, "", err
	}
	if err := fsutil.WriteFile(path, b, 0o600); err != nil {
		return nil, "", fmt.Errorf("agent: keep credential: %w", err)
	}
	log.Info("joined", "server", server, "host", res.Host, "groups", res.Groups)
	c, err := client.New(server, res.Secret, caSHA256)
	return c, res.Host, err
}

// serverSource is an agent's desired state from the control server:
// blocking queries, so a change arrives within milliseconds, each also
// a full poll when it times out.
type serverSource struct {
	c    *client.Client
	wait time.Duration
}

func (s serverSource) Watch(ctx context.Context, fn func(*desired.Doc, error)) error {
	return s.c.WatchDesired(ctx, s.wait, fn)
}

// serverMode wires cfg to the control server and returns the agent's
// client of it.
func serverMode(ctx context.Context, cfg *agent.Config, server, token, caSHA256 string) (*client.Client, error) {
	c, host, err := joinServer(ctx, cfg.Root, server, token, caSHA256, cfg.Name, cfg.Logger)
	if err != nil {
		return nil, err
	}
	cfg.Name = host
	cfg.Desired = c.Server()
	cfg.Source = serverSource{c: c, wait: 5 * time.Minute}
	cfg.Report = func(ctx context.Context, st *agent.State) error {
		return c.Report(ctx, api.Report{State: *st})
	}
	reg := newRegistry()
	reg["https"] = c.ArtifactSource()
	reg["http"] = c.ArtifactSource()
	cfg.Registry = reg
	return c, nil
}

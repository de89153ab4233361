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
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
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

// joinToken is the token an agent joins with and where it came from.
type joinToken struct {
	secret string
	file   string // removed once the agent joined: the credential replaces it
}

// takeJoinToken finds the join token: --join-file, $FERRY_JOIN_TOKEN or
// (warned against) --join. It clears the variable, so that no app the
// agent starts inherits it.
func takeJoinToken(flag, file string, log *slog.Logger) (joinToken, error) {
	env := os.Getenv(joinTokenEnv)
	os.Unsetenv(joinTokenEnv)
	n := 0
	for _, s := range []string{flag, file, env} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return joinToken{}, usageError{fmt.Errorf("give the join token once: --join-file, $%s or --join", joinTokenEnv)}
	}
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			// Removed after an earlier join: the credential is what counts.
			return joinToken{}, nil
		}
		if err != nil {
			return joinToken{}, usageError{fmt.Errorf("--join-file: %w", err)}
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return joinToken{}, usageError{fmt.Errorf("--join-file %s is empty: write the token ferry agent join-token printed into it", file)}
		}
		return joinToken{secret: t, file: file}, nil
	case env != "":
		return joinToken{secret: strings.TrimSpace(env)}, nil
	case flag != "":
		log.Warn("--join puts the join token in the process list, where every local user can read it; pass it in $" + joinTokenEnv + " or --join-file instead")
		return joinToken{secret: flag}, nil
	}
	return joinToken{}, nil
}

// joinServer returns the agent's client of the server: from the stored
// credential, or by joining with token (and then storing it).
func joinServer(ctx context.Context, root, server string, token joinToken, caSHA256, name string, log *slog.Logger) (*client.Client, string, error) {
	path := filepath.Join(root, credentialFile)
	var had agentCredential
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
				return nil, "", fmt.Errorf("agent: the credential in %s: %w; join again with --server https://HOST:7400 and a join token", path, err)
			}
			if token.secret == "" {
				return c, cred.Host, nil
			}
			// A join token beside a stored credential: join again only if
			// the server no longer takes the credential (the host was
			// removed, say, to join other groups).
			if _, err := c.Whoami(ctx); ferry.ErrorCode(err) != ferry.EUNAUTH {
				log.Info("already joined: the stored credential is used, not the join token", "host", cred.Host)
				return c, cred.Host, nil
			}
			log.Info("the server refuses the stored credential; joining again", "host", cred.Host)
		}
		if server != "" && server != cred.Server {
			log.Info("the server changed; joining again", "was", cred.Server, "now", server)
			had = cred
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("agent: %w", err)
	}
	if server == "" {
		return nil, "", usageError{errors.New("--server is required (with a join token and --ca-sha256 HASH the first time)")}
	}
	if token.secret == "" {
		return nil, "", usageError{fmt.Errorf("this agent has not joined %s yet: give it a join token in $%s or --join-file (ferry agent join-token --group G prints one) and --ca-sha256", server, joinTokenEnv)}
	}
	if caSHA256 == "" {
		log.Warn("no --ca-sha256: trusting the system's certificate authorities for " + server)
	}
	anon, err := client.New(server, "", caSHA256)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("--server: %w", err)}
	}
	if name == "" {
		if name, err = os.Hostname(); err != nil {
			return nil, "", fmt.Errorf("agent: no --name and no hostname: %w", err)
		}
	}
	req := api.JoinRequest{Token: token.secret, Name: name}
	if had.Host == name {
		// The old credential shows this is the same host, not a takeover.
		req.Name, req.Credential = had.Host, had.Secret
	}
	res, err := anon.Join(ctx, req)
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
	if token.file != "" {
		if err := os.Remove(token.file); err != nil {
			log.Warn("could not remove the join token file; remove it by hand", "file", token.file, "err", err)
		}
	}
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
func serverMode(ctx context.Context, cfg *agent.Config, server string, token joinToken, caSHA256 string) (*client.Client, error) {
	c, host, err := joinServer(ctx, cfg.Root, server, token, caSHA256, cfg.Name, cfg.Logger)
	if err != nil {
		return nil, err
	}
	cfg.Name = host
	cfg.Desired = c.Server()
	cfg.Source = serverSource{c: c, wait: 5 * time.Minute}
	cfg.Report = func(ctx context.Context, st api.HostReport) error {
		return c.Report(ctx, api.Report{State: st})
	}
	reg := newRegistry()
	reg["https"] = c.ArtifactSource()
	reg["http"] = c.ArtifactSource()
	cfg.Registry = reg
	return c, nil
}

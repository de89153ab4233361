package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// Environment variables that override the saved login, e.g. in CI.
const (
	EnvServer   = "FERRY_SERVER"
	EnvToken    = "FERRY_TOKEN"
	EnvCASHA256 = "FERRY_CA_SHA256"
)

// clientConfig is what `ferry login` saves: which server the CLI talks to,
// with which credential, trusting which CA.
type clientConfig struct {
	Server   string `json:"server"`
	Token    string `json:"token"`
	CASHA256 string `json:"ca_sha256,omitempty"`
}

// clientConfigPath is $XDG_CONFIG_HOME/ferry/config.json, by default
// ~/.config/ferry/config.json on every OS (as most CLIs do, not
// os.UserConfigDir's ~/Library on macOS).
func clientConfigPath(getenv func(string) string) (string, error) {
	if dir := getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "ferry", "config.json"), nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("config: no home directory to keep ferry's login in: %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".config", "ferry", "config.json"), nil
}

// readClientConfig reads the saved login; a missing file is an empty one.
func readClientConfig(path string) (clientConfig, error) {
	var c clientConfig
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config: %s: %w (run ferry login again to rewrite it)", path, err)
	}
	return c, nil
}

// writeClientConfig saves c atomically, readable by its owner only: it
// holds a credential.
func writeClientConfig(path string, c clientConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := fsutil.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("config: save %s: %w", path, err)
	}
	return nil
}

// withEnv lays the FERRY_* variables over the saved login. A server from
// the environment other than the saved one takes its token and CA pin from
// the environment too: the saved token must not go to another server, and
// its pin would only make the connection fail.
func (c clientConfig) withEnv(getenv func(string) string) clientConfig {
	if s := getenv(EnvServer); s != "" && s != c.Server {
		c = clientConfig{Server: s}
	}
	if t := getenv(EnvToken); t != "" {
		c.Token = t
	}
	if h := getenv(EnvCASHA256); h != "" {
		c.CASHA256 = h
	}
	return c
}

// loadClientConfig is the saved login with the environment's overrides.
func loadClientConfig() (clientConfig, error) {
	path, err := clientConfigPath(os.Getenv)
	if err != nil {
		return clientConfig{}, err
	}
	c, err := readClientConfig(path)
	if err != nil {
		return c, err
	}
	c = c.withEnv(os.Getenv)
	if c.Server != "" && c.Token == "" && os.Getenv(EnvServer) != "" {
		return c, ferry.Errorf(ferry.EUNAUTH, "%s names %s but no token goes with it: set %s too", EnvServer, c.Server, EnvToken)
	}
	if c.Server == "" || c.Token == "" {
		return c, ferry.Errorf(ferry.EUNAUTH, "not logged in to a ferry server: run ferry login https://HOST:7400 --token TOKEN --ca-sha256 HASH, or set %s and %s", EnvServer, EnvToken)
	}
	return c, nil
}

// loadClient is the API client every server command uses. The login comes
// from the files and variables of the process, not env: a command's
// streams do not say where its user's config lives.
func loadClient(_ Env) (*client.Client, error) {
	c, err := loadClientConfig()
	if err != nil {
		return nil, err
	}
	return client.New(c.Server, c.Token, c.CASHA256)
}

package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry"
)

// isolateLogin points the login at an empty config dir and clears the
// FERRY_* variables, so a developer's own login never leaks into a test.
func isolateLogin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	for _, k := range []string{EnvServer, EnvToken, EnvCASHA256} {
		t.Setenv(k, "")
	}
	return filepath.Join(dir, "ferry", "config.json")
}

func TestClientConfigSaveLoad(t *testing.T) {
	path := isolateLogin(t)
	got, err := clientConfigPath(os.Getenv)
	if err != nil || got != path {
		t.Fatalf("path = %q, %v; want %q", got, err, path)
	}
	want := clientConfig{Server: "https://deploy.example.com:7400", Token: "fy_secret", CASHA256: strings.Repeat("ab", 32)}
	if err := writeClientConfig(path, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600: it holds a token", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("config dir holds %d entries, want only config.json (no temp files left)", len(entries))
	}
	c, err := loadClientConfig()
	if err != nil || c != want {
		t.Fatalf("loaded %+v, %v; want %+v", c, err, want)
	}
	// A second login replaces the first whole.
	want2 := clientConfig{Server: "https://other:7400", Token: "fy_2"}
	if err := writeClientConfig(path, want2); err != nil {
		t.Fatal(err)
	}
	if c, err := loadClientConfig(); err != nil || c != want2 {
		t.Fatalf("after relogin %+v, %v; want %+v", c, err, want2)
	}
}

func TestClientConfigPathDefault(t *testing.T) {
	env := map[string]string{"HOME": "/home/ann", "XDG_CONFIG_HOME": "relative/ignored"}
	got, err := clientConfigPath(func(k string) string { return env[k] })
	if err != nil || got != "/home/ann/.config/ferry/config.json" {
		t.Errorf("path = %q, %v", got, err)
	}
}

func TestClientConfigEnvOverrides(t *testing.T) {
	saved := clientConfig{Server: "https://a:7400", Token: "tok-a", CASHA256: "pin-a"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want clientConfig
	}{
		{"none", nil, saved},
		{"token", map[string]string{EnvToken: "tok-env"}, clientConfig{"https://a:7400", "tok-env", "pin-a"}},
		{"same server", map[string]string{EnvServer: "https://a:7400"}, saved},
		{"pin", map[string]string{EnvCASHA256: "pin-env"}, clientConfig{"https://a:7400", "tok-a", "pin-env"}},
		// The saved token must never go to a server named elsewhere.
		{"other server", map[string]string{EnvServer: "https://b:7400"}, clientConfig{Server: "https://b:7400"}},
		{"other server, all", map[string]string{EnvServer: "https://b:7400", EnvToken: "tok-b", EnvCASHA256: "pin-b"},
			clientConfig{"https://b:7400", "tok-b", "pin-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := saved.withEnv(func(k string) string { return tc.env[k] }); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLoadClientEnvOnly(t *testing.T) {
	isolateLogin(t)
	t.Setenv(EnvServer, "deploy.example.com:7400")
	t.Setenv(EnvToken, "fy_ci")
	c, err := loadClient(Env{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Server() != "https://deploy.example.com:7400" {
		t.Errorf("server = %q", c.Server())
	}
}

func TestServerFromEnvWithoutToken(t *testing.T) {
	path := isolateLogin(t)
	if err := writeClientConfig(path, clientConfig{Server: "https://a:7400", Token: "tok-a"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvServer, "https://b:7400")
	_, err := loadClient(Env{})
	if err == nil || !strings.Contains(err.Error(), "set "+EnvToken) {
		t.Errorf("err = %v", err)
	}
}

func TestNotLoggedIn(t *testing.T) {
	isolateLogin(t)
	_, err := loadClient(Env{})
	if err == nil || !strings.Contains(err.Error(), "run ferry login") {
		t.Fatalf("err = %v, want a hint to run ferry login", err)
	}
	if ferry.ErrorCode(err) != ferry.EUNAUTH {
		t.Errorf("code = %q", ferry.ErrorCode(err))
	}
	for _, args := range [][]string{{"status"}, {"releases", "hello"}, {"deploy", "hello", "--to", "prod"}, {"token", "list"}} {
		out, code := runCLI(t, args...)
		if code != ExitFailure || !strings.Contains(out, "ferry login") {
			t.Errorf("ferry %v: exit %d, output %q", args, code, out)
		}
	}
}

func TestCorruptConfig(t *testing.T) {
	path := isolateLogin(t)
	os.MkdirAll(filepath.Dir(path), 0o700)
	os.WriteFile(path, []byte("{not json"), 0o600)
	if _, err := loadClientConfig(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want one naming %s", err, path)
	}
}

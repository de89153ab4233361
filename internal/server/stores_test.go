package server

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
	"github.com/ferrydeploy/ferry/internal/store/dir"
)

// openStores gives cfg what `ferry server` opens by default, where cfg
// has none: a bolt state at Data/state.db and a directory store at
// Data/artifacts. It returns what closes the state it opened, which the
// test's end does too; a test that starts a server again on the same
// data closes it first.
func openStores(t testing.TB, cfg *Config) (closeState func()) {
	t.Helper()
	closeState = func() {}
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		t.Fatal(err)
	}
	if cfg.State == nil {
		st, err := bolt.Open(filepath.Join(cfg.Data, StateFile), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		closeState = func() { once.Do(func() { st.Close() }) }
		t.Cleanup(closeState)
		cfg.State = st
	}
	if cfg.Store == nil {
		b, err := dir.New(filepath.Join(cfg.Data, ArtifactsDir))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Store = b
	}
	return closeState
}

// newServer is New on the stores openStores gives cfg.
func newServer(t testing.TB, cfg Config) (*Server, error) {
	t.Helper()
	openStores(t, &cfg)
	return New(t.Context(), cfg)
}

// TestNewNeedsStores: the server opens no store of its own; without the
// state or the artifact store it says which is missing.
func TestNewNeedsStores(t *testing.T) {
	full := Config{Data: t.TempDir(), Listen: "127.0.0.1:0"}
	openStores(t, &full)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no state", func(c *Config) { c.State = nil }, "no state store"},
		{"no artifact store", func(c *Config) { c.Store = nil }, "no artifact store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := full
			cfg.Data = t.TempDir()
			tc.mod(&cfg)
			_, err := New(t.Context(), cfg)
			if ferry.ErrorCode(err) != ferry.EINVALID || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want invalid: %s", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(cfg.Data, StateFile)); tc.name == "no state" && err == nil {
				t.Error("New made a state file of its own")
			}
		})
	}
}

package agent

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/signature"
)

// TestTrustedKeys: an agent that trusts one key runs a release signed by
// it, and refuses an unsigned one and one signed by another key, saying
// why, while the signed release keeps running.
func TestTrustedKeys(t *testing.T) {
	keys := t.TempDir()
	signature.Generate(filepath.Join(keys, "ops"), "ops")
	signature.Generate(filepath.Join(keys, "mallory"), "mallory")
	ops, _ := signature.LoadPrivate(filepath.Join(keys, "ops.key"))
	mallory, _ := signature.LoadPrivate(filepath.Join(keys, "mallory.key"))
	trusted, err := signature.LoadTrusted(filepath.Join(keys, "ops.pub"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	a1, s1 := buildApp(t, "app", "v1", healthyWeb)
	a2, s2 := buildApp(t, "app", "v2", healthyWeb)
	signed := func(path, sum string, n int, by []signature.Signature) string {
		var b strings.Builder
		fmt.Fprintf(&b, "    release: v%d\n    config_rev: 4\n", n)
		if len(by) > 0 {
			b.WriteString("    signatures:\n")
			for _, s := range by {
				fmt.Fprintf(&b, "      - {key: %q, sig: %q}\n", s.Key, s.Sig)
			}
		}
		return "apps:\n" + entry("app", path, sum, b.String())
	}
	msg := func(n int, sum string) []byte { return signature.ReleaseMessage("app", n, sum, 4) }

	writeDesired(t, desiredPath, signed(a1, s1, 1, []signature.Signature{signature.Sign(ops, msg(1, s1))}))
	ta := startAgent(t, root, desiredPath, func(c *Config) { c.TrustedKeys = trusted })
	st := ta.until("v1, signed by ops, running", 20*time.Second, running("app", s1, 2))
	before := pids(st.Apps["app"])

	for _, tc := range []struct {
		name string
		doc  string
		why  string
	}{
		{"unsigned", signed(a2, s2, 2, nil), "release v2 refused: it is unsigned"},
		{"signed by another key", signed(a2, s2, 2, []signature.Signature{signature.Sign(mallory, msg(2, s2))}), "signed only by keys this host does not trust"},
		{"ops's signature of another release", signed(a2, s2, 2, []signature.Signature{signature.Sign(ops, msg(1, s1))}), "does not match it"},
	} {
		writeDesired(t, desiredPath, tc.doc)
		st = ta.until(tc.name+" refused", 20*time.Second, func(st *State) bool {
			as := st.Apps["app"]
			return as != nil && as.State == AppFailed && strings.Contains(as.Error, tc.why)
		})
		if as := st.Apps["app"]; as.SHA256 != s1 || fmt.Sprint(pids(as)) != fmt.Sprint(before) {
			t.Fatalf("%s: the agent left v1 (%s, pids %v → %v)", tc.name, as.SHA256, before, pids(as))
		}
	}
	writeDesired(t, desiredPath, signed(a2, s2, 2, []signature.Signature{signature.Sign(ops, msg(2, s2))}))
	ta.until("v2, signed by ops, running", 20*time.Second, running("app", s2, 2))
}

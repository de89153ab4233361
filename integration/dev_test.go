package integration

import (
	"strings"
	"testing"
)

// TestDevOnce is the README's run command: a server, an agent and hello,
// deployed and upgraded under load with no failed request.
func TestDevOnce(t *testing.T) {
	r := ferry(t, "", nil, "dev", "--once", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--app", "../examples/hello")
	if r.code != 0 {
		t.Fatalf("ferry dev: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"release v1 of hello is running and healthy", "upgraded to v2 under load", " 0 failed", "ferry login https://127.0.0.1:", "web UI: https://127.0.0.1:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}

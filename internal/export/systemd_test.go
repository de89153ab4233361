package export

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestSystemdAnalyzeVerify loads every generated unit into systemd's own
// parser. verify exits 0 on unknown keys and bad values, only warning, so
// any output at all fails the test.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze := testenv.NeedCommand(t, "systemd-analyze")
	dir := t.TempDir()
	app := testApp()
	// verify checks that ExecStart's binary exists; /bin/sh does.
	app.Processes = append(app.Processes, ferry.Process{Name: "percent", Command: `date +%s; echo "a \"b\" c" $HOME`, Scale: 1})
	if _, err := Export("systemd", Options{App: app, Dir: dir, Root: dir, User: "deploy", Env: secretEnv}); err != nil {
		t.Fatal(err)
	}
	unit, err := AgentUnit(AgentOptions{Binary: "/bin/true", Root: "/var/lib/ferry", Desired: "https://example.com/desired.yaml?host=a b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, AgentUnitName), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	units, _ := filepath.Glob(filepath.Join(dir, "*.service"))
	targets, _ := filepath.Glob(filepath.Join(dir, "*.target"))
	units = append(units, targets...)
	if len(units) != 6 {
		t.Fatalf("units: %v", units)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// And it does catch a broken unit, so the silence above means something.
	bad := filepath.Join(dir, "broken.service")
	os.WriteFile(bad, []byte("[Service]\nExecStart=/bin/sh -c true\nKillMode=sometimes\n"), 0o644)
	if out, _ := exec.Command(analyze, "verify", "--man=no", bad).CombinedOutput(); !strings.Contains(string(out), "kill mode") {
		t.Errorf("systemd-analyze verify did not flag a bad KillMode: %s", out)
	}
}

func TestAgentUnit(t *testing.T) {
	unit, err := AgentUnit(AgentOptions{Binary: "/usr/local/bin/ferry", Root: "/var/lib/ferry", Server: "https://ferry.example.com", Name: "web 1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`ExecStart=/usr/local/bin/ferry agent --root /var/lib/ferry --server https://ferry.example.com --name "web 1"` + "\n",
		"\nKillMode=process\n", "\nRestart=always\n", "\nTimeoutStopSec=30\n",
		"\nAfter=network-online.target\n", "\nWantedBy=multi-user.target\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if _, err := AgentUnit(AgentOptions{Binary: "/b", Root: "/r"}); err == nil {
		t.Error("no --desired nor --server: no error")
	}
	if _, err := AgentUnit(AgentOptions{Binary: "ferry", Root: "/r", Desired: "/d"}); err == nil {
		t.Error("relative binary: no error")
	}
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/internal/testenv"
	"github.com/spf13/cobra"
)

// runExportCmd runs a command built by newX in-process and returns its stdout
// and exit code.
func runExportCmd(t *testing.T, newCmd func(Env) *cobra.Command, args ...string) (string, int, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newCmd(Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	ctx := context.Background()
	err := cmd.ExecuteContext(ctx)
	return out.String(), ExitCode(ctx, err), err
}

func writeAppFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExportSystemd(t *testing.T) {
	app, out := t.TempDir(), t.TempDir()
	writeAppFiles(t, app, map[string]string{
		"ferry.yaml": "app: hello\nprocesses:\n  web:\n    command: bin/hello\n    port: 8080\n    scale: 2\n  worker:\n    command: bin/hello worker\n    stop_timeout: 45s\n",
		".env":       "SECRET='s3cr3t $x'\n",
	})
	stdout, code, err := runExportCmd(t, newExport, "systemd", "-d", app, "-o", out, "-m", "web=1", "-p", "6000", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	var res struct {
		App     string   `json:"app"`
		Written []string `json:"written"`
		Removed []string `json:"removed"`
		Next    string   `json:"next"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if res.App != "hello" || len(res.Written) != 5 || !strings.Contains(res.Next, "systemctl enable --now hello.target") {
		t.Errorf("result: %+v", res)
	}
	env, _ := os.ReadFile(filepath.Join(out, "hello-worker-1.env"))
	for _, want := range []string{"PORT=\"6100\"\n", "SECRET=\"s3cr3t \\$x\"\n", "FERRY_APP=\"hello\"\n"} {
		if !strings.Contains(string(env), want) {
			t.Errorf("env file lacks %q:\n%s", want, env)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(out, "hello-worker-1.service"))
	for _, want := range []string{"\nTimeoutStopSec=45\n", "\nWorkingDirectory=" + app + "\n", "\nEnvironmentFile=" + filepath.Join(out, "hello-worker-1.env") + "\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if strings.Contains(string(unit), "s3cr3t") {
		t.Error("the secret is in the unit file")
	}

	// Scale down in text mode: the list says what went.
	stdout, code, err = runExportCmd(t, newExport, "systemd", "-d", app, "-o", out, "-m", "all=0,worker=1")
	if code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	if !strings.Contains(stdout, "removed "+filepath.Join(out, "hello-web-1.service")) || !strings.Contains(stdout, "wrote   "+filepath.Join(out, "hello.target")) {
		t.Errorf("output:\n%s", stdout)
	}
}

func TestExportProcfile(t *testing.T) {
	app, out := t.TempDir(), t.TempDir()
	writeAppFiles(t, app, map[string]string{"Procfile": "web: bundle exec puma -p $PORT\n"})
	if _, code, err := runExportCmd(t, newExport, "supervisord", "-d", app, "-o", out); code != ExitUsage || !strings.Contains(err.Error(), "-a APP is required") {
		t.Errorf("no -a: exit %d, %v", code, err)
	}
	if _, code, err := runExportCmd(t, newExport, "supervisord", "-d", app, "-o", out, "-a", "shop", "-r", "/srv/shop"); code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	conf, _ := os.ReadFile(filepath.Join(out, "shop.conf"))
	if !strings.Contains(string(conf), "[program:shop-web-1]") || !strings.Contains(string(conf), "directory=/srv/shop\n") {
		t.Errorf("shop.conf:\n%s", conf)
	}
}

func TestExportErrors(t *testing.T) {
	app := t.TempDir()
	writeAppFiles(t, app, map[string]string{"Procfile": "web: bin/web\nworker: bin/worker\n"})
	empty := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad format", []string{"upstart", "-d", app, "-a", "x", "-o", "/tmp/x"}, ExitUsage, `unknown format "upstart": use one of launchd, supervisord, systemd`},
		{"no format", []string{"-o", "/tmp/x"}, ExitUsage, "accepts 1 arg"},
		{"no dir", []string{"systemd", "-d", app, "-a", "x"}, ExitUsage, "-o DIR is required"},
		{"unknown process", []string{"systemd", "-d", app, "-a", "x", "-o", t.TempDir(), "-m", "web=1,wrker=2"}, ExitUsage, `-m: no process "wrker" in x (it has web, worker)`},
		{"bad formation", []string{"systemd", "-d", app, "-a", "x", "-o", t.TempDir(), "-m", "web:2"}, ExitUsage, `"web:2" is not PROCESS=COUNT`},
		{"missing Procfile", []string{"systemd", "-d", empty, "-a", "x", "-o", t.TempDir()}, ExitFailure, "no ferry.yaml or Procfile in " + empty},
		{"missing env file", []string{"systemd", "-d", app, "-a", "x", "-o", t.TempDir(), "-e", filepath.Join(empty, "nope.env")}, ExitFailure, "env file " + filepath.Join(empty, "nope.env")},
		{"bad output", []string{"systemd", "-d", app, "-a", "x", "-o", t.TempDir(), "--output", "yaml"}, ExitUsage, `--output "yaml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, code, err := runExportCmd(t, newExport, tt.args...)
			if code != tt.code || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("exit %d, %v; want exit %d and %q", code, err, tt.code, tt.want)
			}
		})
	}
}

func TestAgentInstall(t *testing.T) {
	out := t.TempDir()
	t.Chdir(t.TempDir())
	stdout, code, err := runExportCmd(t, newAgentInstall, "--desired", "desired.yaml", "--binary", "/bin/true", "--name", "web-1", "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	path := filepath.Join(out, "ferry-agent.service")
	if !strings.Contains(stdout, "wrote "+path) || !strings.Contains(stdout, "systemctl daemon-reload && systemctl enable --now ferry-agent.service") {
		t.Errorf("output:\n%s", stdout)
	}
	unit, _ := os.ReadFile(path)
	wd, _ := os.Getwd()
	for _, want := range []string{
		"\nExecStart=/bin/true agent --root /var/lib/ferry --desired " + filepath.Join(wd, "desired.yaml") + " --name web-1\n",
		"\nKillMode=process\n", "\nRestart=always\n", "\nAfter=network-online.target\n", "\nWantedBy=multi-user.target\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else if testenv.InCI() {
		t.Fatalf("systemd-analyze is missing: %v", err)
	}

	for _, args := range [][]string{
		{"-o", out},
		{"--desired", "d.yaml", "--server", "https://s", "-o", out},
		{"--server", "https://s", "--binary", "/no/such/ferry", "-o", out},
	} {
		if _, code, err := runExportCmd(t, newAgentInstall, args...); code != ExitUsage {
			t.Errorf("%q: exit %d (%v), want %d", args, code, err, ExitUsage)
		}
	}
}

func TestExportHelp(t *testing.T) {
	for name, newCmd := range map[string]func(Env) *cobra.Command{"export": newExport, "agent install": newAgentInstall} {
		stdout, code, err := runExportCmd(t, newCmd, "--help")
		if code != 0 || !strings.Contains(stdout, "Examples:") {
			t.Errorf("%s --help: exit %d, %v:\n%s", name, code, err, stdout)
		}
	}
}

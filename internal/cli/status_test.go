package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
)

func proc(name string, n int, state string, h health.Status, lastErr string) api.ProcessStatus {
	return api.ProcessStatus{Process: name, Instance: n, State: state, Health: h, LastError: lastErr}
}

func TestPrintServerStatus(t *testing.T) {
	now := t0
	st := api.Status{Hosts: []api.Host{
		{Name: "web-2", Groups: []string{"prod"}, LastSeen: now.Add(-4 * time.Second), Apps: map[string]*api.AppStatus{
			"hello": {Label: "v4", Release: "v4-1a2b3c4d", State: agent.AppRunning, Processes: []api.ProcessStatus{
				proc("web", 1, supervise.StateRunning, health.Healthy, ""),
				proc("web", 2, supervise.StateBackoff, health.Unknown, "exit status 1"),
				proc("worker", 1, supervise.StateRunning, health.Unhealthy, "health: http /healthz: 500"),
			}},
			"api": {Release: "v9-00aa11bb", State: agent.AppInstalling},
		}},
		{Name: "web-1", Groups: []string{"prod", "eu"}, LastSeen: now.Add(-90 * time.Second), Apps: map[string]*api.AppStatus{
			"hello": {Label: "v4", Release: "v4-1a2b3c4d", State: agent.AppRunning, Processes: []api.ProcessStatus{
				proc("web", 1, supervise.StateRunning, health.Healthy, ""),
				proc("web", 2, supervise.StateRunning, health.Healthy, ""),
			}},
		}},
		{Name: "db-1", Groups: []string{"prod"}, LastSeen: now.Add(-26 * time.Hour), Lost: true},
		{Name: "new-1", Groups: nil},
	}}
	var b bytes.Buffer
	printServerStatus(&b, st, "", now)
	b.WriteString("\n# ferry status hello\n")
	printServerStatus(&b, st, "hello", now)
	b.WriteString("\n# no hosts\n")
	printServerStatus(&b, api.Status{}, "", now)
	checkGolden(t, "status.txt", b.String())
}

func TestAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "just now", 59 * time.Second: "59s ago", 61 * time.Minute: "1h ago", 47 * time.Hour: "47h ago", 72 * time.Hour: "2026-02-26 12:00",
	} {
		if got := ago(t0, t0.Add(-d)); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
	if ago(t0, time.Time{}) != "never" {
		t.Error("zero time")
	}
}

func TestTableTrimsBlanks(t *testing.T) {
	var b bytes.Buffer
	tw := newTable(&b)
	tw.Write([]byte("A\tB\tC\nlong value\t\t\n"))
	tw.Flush()
	if got, want := b.String(), "A           B  C\nlong value\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

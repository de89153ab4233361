package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

func TestPrintLocks(t *testing.T) {
	locks := []api.Lock{
		{App: "hello", Group: "prod", Owner: "alice", Reason: "deploy v4 (d-7f3a)", Since: t0.Add(-3 * time.Minute), Expires: t0.Add(25 * time.Second)},
		{App: "api", Group: "staging", Owner: "ci-api", Reason: "rollback to v8 (d-9)", Since: t0.Add(-time.Hour), Expires: t0.Add(-time.Second)},
	}
	var b bytes.Buffer
	printLocks(&b, locks, t0)
	printLocks(&b, nil, t0)
	checkGolden(t, "locks.txt", b.String())
}

// TestJoinCommand: the printed command passes the join token in the
// environment, never as an argument every local user reads in ps.
func TestJoinCommand(t *testing.T) {
	if got, want := joinCommand("https://d:7400", "fyj_x", "ab12"), "FERRY_JOIN_TOKEN=fyj_x ferry agent --server https://d:7400 --ca-sha256 ab12"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := joinCommand("https://d:7400", "fyj_x", ""), "FERRY_JOIN_TOKEN=fyj_x ferry agent --server https://d:7400"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

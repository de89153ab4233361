package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

func TestPrintReleases(t *testing.T) {
	sum := strings.Repeat("9f86d081", 8)
	rs := []api.Release{
		{App: "hello", Number: 1, SHA256: sum, Version: "v1.0.0", ConfigRev: 1, Created: t0.Add(-72 * time.Hour), By: "alice", Outcome: "healthy"},
		{App: "hello", Number: 3, SHA256: sum, Version: "v1.1.0", ConfigRev: 2, Created: t0.Add(-time.Hour), By: "ci-hello", Outcome: "deploying"},
		{App: "hello", Number: 2, SHA256: sum, Version: "v1.1.0", Created: t0.Add(-2 * time.Hour), By: "bob", Outcome: "rolled-back"},
	}
	groups := []api.GroupApp{{Group: "staging", Release: 3}, {Group: "prod", Release: 1}, {Group: "eu", Release: 1}}
	var b bytes.Buffer
	printReleases(&b, rs, groups, t0)
	printReleases(&b, nil, nil, t0)
	checkGolden(t, "releases.txt", b.String())
}

func TestPrintAudit(t *testing.T) {
	evs := lastEvents([]api.AuditEvent{
		{Time: t0.Add(2 * time.Minute), Who: "alice", From: "10.0.0.7", Action: "deploy", Target: "hello/prod", Detail: "v4 (d-7f3a)"},
		{Time: t0, Who: "ci-hello", From: "10.0.0.9", Action: "publish", Target: "hello", Detail: "v1.1.0 9f86d081884c"},
		{Time: t0.Add(time.Minute), Who: "alice", From: "10.0.0.7", Action: "token.create", Target: "tok_2"},
		{Time: t0.Add(-time.Hour), Who: "admin", Action: "server.start"},
	}, 3)
	var b bytes.Buffer
	printAudit(&b, evs, t0)
	printAudit(&b, nil, t0)
	checkGolden(t, "history.txt", b.String())
}

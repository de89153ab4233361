package ui

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"join": strings.Join,
	"bytes": func(n int64) string {
		if n < 1<<20 {
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	},
	"short": func(s string) string { return s[:min(len(s), 12)] },
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05") + " UTC (" + ago(time.Now(), t) + " ago)"
	},
	// stateClass colours a deployment's, a host's or a release's state;
	// the state is always written out too.
	// It takes any of ferry's typed states.
	"stateClass": func(state any) string {
		switch fmt.Sprint(state) {
		case string(ferry.DeploySucceeded), string(ferry.Healthy):
			return "ok"
		case string(ferry.DeployFailed), string(ferry.Unhealthy):
			return "bad"
		case string(ferry.DeployRolledBack), string(ferry.DeployWaiting):
			return "warn"
		}
		return "busy"
	},
}

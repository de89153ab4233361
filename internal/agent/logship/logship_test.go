package logship

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/api"
)

// TestTailNames: the app and process of a log request become a path and a
// glob, so they are checked by ferry's rules for app and process names,
// the ones the apps on this host were installed under, whatever a server
// sends.
func TestTailNames(t *testing.T) {
	apps := t.TempDir()
	// Web would be an app on a server that took any host-like name; no
	// ferry.yaml names it, and its logs are not shipped.
	for _, app := range []string{"hello", "Web"} {
		if err := os.MkdirAll(filepath.Join(apps, app, "logs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(apps, app, "logs", "web.1.log"), []byte("2026-01-01T00:00:00Z up\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		app, process string
		want         string // "": the line is sent
	}{
		{"hello", "", ""},
		{"hello", "web", ""},
		{"Web", "", `app: "Web" is not a valid app name: 'W' is not allowed`},
		{"..", "", `app: ".." is not a valid app name: '.' is not allowed`},
		{"hello", "web.1", `process: "web.1" is not a valid process name: '.' is not allowed`},
		{"hello", "../../Web/logs/web", `process: "../../Web/logs/web" is not a valid process name`},
	} {
		var b bytes.Buffer
		err := tail(t.Context(), apps, api.LogRequest{App: tc.app, Process: tc.process, Lines: 10}, &encoder{w: &b})
		switch {
		case tc.want == "" && (err != nil || !strings.Contains(b.String(), `"line":"2026-01-01T00:00:00Z up"`)):
			t.Errorf("%s %s: %v, sent %q", tc.app, tc.process, err, b.String())
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || b.Len() > 0):
			t.Errorf("%s %s: %v, sent %q; want the error %s…", tc.app, tc.process, err, b.String(), tc.want)
		}
	}
}

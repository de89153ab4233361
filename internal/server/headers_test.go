package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/api"
)

// TestSecurityHeaders: every answer, the UI's pages and the API's
// answers alike (errors and the mux's own redirects too), tells the
// browser to keep to HTTPS, stay out of frames, not sniff types and keep
// its URLs out of other sites' Referer; UI pages keep their CSP.
func TestSecurityHeaders(t *testing.T) {
	ts := startServer(t, t.TempDir())
	want := map[string]string{
		"Strict-Transport-Security": "max-age=31536000",
		"X-Frame-Options":           "DENY",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "same-origin",
	}
	hc := &http.Client{Transport: ts.client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, token string
		status      int
		ui          bool
	}{
		{"/login", "", 200, true},
		{"/", ts.admin, 200, true},
		{"/", "", 303, true}, // to the sign-in page
		{"/nope", ts.admin, 404, true},
		{api.PathHealth, "", 200, false},
		{api.PathWhoami, ts.admin, 200, false},
		{api.PathWhoami, "", 401, false},
		{"/v1/nope", ts.admin, 404, false},
		{"/v1//whoami", ts.admin, 307, false}, // the mux cleans the path
	} {
		req, _ := http.NewRequest("GET", ts.srv.URL()+tc.path, nil)
		if tc.token != "" {
			if tc.ui {
				req.AddCookie(&http.Cookie{Name: "ferry_token", Value: tc.token})
			} else {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.status)
		}
		for k, v := range want {
			if got := resp.Header.Values(k); len(got) != 1 || got[0] != v {
				t.Errorf("GET %s (%d): %s: %q, want %q", tc.path, resp.StatusCode, k, got, v)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); tc.ui != strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
}

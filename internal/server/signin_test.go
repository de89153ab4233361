package server

import (
	"net/url"
	"strings"
	"testing"
)

// TestSignInRedirect: after signing in, the browser goes back to the page
// it came from on this server, never to another site however next is
// spelled, whether it came through the sign-in page's form or straight to
// POST /login.
func TestSignInRedirect(t *testing.T) {
	ts := startServer(t, t.TempDir())
	anon := uiClient{ts: ts}

	// The round trip of a signed-out visit keeps its page.
	ans := anon.do("GET", "/audit?x=1", nil, nil)
	loc, err := url.Parse(ans.location)
	if ans.status != 303 || err != nil || loc.Path != "/login" {
		t.Fatalf("signed out: %d to %q", ans.status, ans.location)
	}
	next := loc.Query().Get("next")
	if body := anon.do("GET", ans.location, nil, nil).body; !strings.Contains(body, `name="next" value="/audit?x=1"`) {
		t.Errorf("sign-in page for %q does not carry it on", next)
	}
	if ans := anon.do("POST", "/login", url.Values{"token": {ts.admin}, "next": {next}}, nil); ans.status != 303 || ans.location != "/audit?x=1" {
		t.Errorf("sign in with next=%q: %d to %q", next, ans.status, ans.location)
	}

	for _, next := range []string{
		"//evil.example/x", "/\t/evil.example", "/\\evil.example", "/\t\\evil.example", "\\\\evil.example",
		"/\r\n/evil.example", "/\n/evil.example", "https:evil.example", "https://evil.example",
		"/%09/evil.example", "/%2F/evil.example", "/%5Cevil.example", " //evil.example",
	} {
		// The sign-in page does not offer it to its form...
		q := url.Values{"next": {next}}
		body := anon.do("GET", "/login?"+q.Encode(), nil, nil).body
		if !strings.Contains(body, `name="next" value="/"`) {
			t.Errorf("GET /login?next=%q: the form carries another next", next)
		}
		// ...nor does POST /login follow it.
		ans := anon.do("POST", "/login", url.Values{"token": {ts.admin}, "next": {next}}, nil)
		if ans.status != 303 || ans.location != "/" || len(ans.cookies) != 1 {
			t.Errorf("sign in with next=%q: %d to %q, %d cookies; want 303 to /", next, ans.status, ans.location, len(ans.cookies))
		}
		// A failed sign-in renders the form again, with "/" too.
		ans = anon.do("POST", "/login", url.Values{"token": {"ferry_nope_nope"}, "next": {next}}, nil)
		if ans.status != 401 || !strings.Contains(ans.body, `name="next" value="/"`) {
			t.Errorf("failed sign in with next=%q: %d, the form carries another next", next, ans.status)
		}
	}
}

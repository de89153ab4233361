package ui

import "testing"

// TestSafeNext: only a path of this server survives as the redirect after
// sign-in; whatever a browser could read as another host becomes "/".
func TestSafeNext(t *testing.T) {
	for _, tc := range []struct{ next, want string }{
		{"/apps/web", "/apps/web"},
		{"/apps/web/config?group=prod", "/apps/web/config?group=prod"},
		{"/deployments/d-1?part=progress#top", "/deployments/d-1?part=progress#top"},
		{"/", "/"},
		{"/a/../b", "/a/../b"}, // http.Redirect cleans it; it stays on this host
		{"/apps/web?q=%2F%2Fx", "/apps/web?q=%2F%2Fx"},
		{"", "/"},
		{"apps/web", "/"},
		{"//evil.example/x", "/"},
		{"///evil.example", "/"},
		{"/\\evil.example", "/"},
		{"\\\\evil.example", "/"},
		{"/apps\\..\\..\\evil", "/"},
		{"/\t/evil.example", "/"},
		{"/\n/evil.example", "/"},
		{"/\r\n/evil.example", "/"},
		{"/apps/web\r\nSet-Cookie: x=1", "/"},
		{"/ /evil.example", "/"},
		{"/\x00/evil.example", "/"},
		{"/\x7f", "/"},
		{"/\u00a0/evil.example", "/"}, // no-break space
		{"/\u200b/evil.example", "/"}, // zero-width space
		{"/\u2028/evil.example", "/"}, // line separator
		{"/\xff", "/"},                // not UTF-8
		{"/%09/evil.example", "/"},
		{"/%0a/evil.example", "/"},
		{"/%2F/evil.example", "/"},
		{"/%2f/evil.example", "/"},
		{"/%5Cevil.example", "/"},
		{"/%5c%5cevil.example", "/"},
		{"/%zz", "/"},
		{"https:evil.example", "/"},
		{"https://evil.example/", "/"},
		{"javascript:alert(1)", "/"},
		{" /apps/web", "/"},
		{"\t//evil.example", "/"},
	} {
		if got := safeNext(tc.next); got != tc.want {
			t.Errorf("safeNext(%q) = %q, want %q", tc.next, got, tc.want)
		}
	}
}

package server

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/api"
)

// uiClient is a browser without JavaScript: it keeps no cookies of its
// own and follows no redirects, so each answer can be looked at.
type uiClient struct {
	ts     *testServer
	cookie string // the ferry_token cookie's value
}

type uiAnswer struct {
	status   int
	location string
	body     string
	cookies  []*http.Cookie
}

func (c uiClient) do(method, path string, form url.Values, hdr map[string]string) uiAnswer {
	c.ts.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, c.ts.srv.URL()+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.cookie != "" {
		req.AddCookie(&http.Cookie{Name: "ferry_token", Value: c.cookie})
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := &http.Client{Transport: c.ts.client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		c.ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return uiAnswer{status: resp.StatusCode, location: resp.Header.Get("Location"), body: string(b), cookies: resp.Cookies()}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf reads the CSRF value from a page's forms.
func (c uiClient) csrf(path string) string {
	c.ts.t.Helper()
	m := csrfRe.FindStringSubmatch(c.do("GET", path, nil, nil).body)
	if m == nil {
		c.ts.t.Fatalf("no CSRF value in %s", path)
	}
	return m[1]
}

// TestUIAuth: every page and form of the UI needs a signed-in token; forms
// need their CSRF value and this origin; a viewer sees no deploy buttons
// and is refused with 403 when it posts the form anyway; secrets stay
// masked; the sign-in cookie is HttpOnly, Secure and SameSite=Strict.
func TestUIAuth(t *testing.T) {
	ts := startServer(t, t.TempDir())
	a := ts.publish("web", "1.0.0")
	cred := ts.join("web-1", "prod")
	ts.report(cred, "web-1", "", "", "", "")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: a.SHA256}, nil)
	ts.waitDesired(cred, "web", "v1")
	ts.report(cred, "web-1", "web", "v1", "running", "")
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"API_KEY": "s3cr3t-value"}, Secret: true}, nil)
	var deps []api.Deployment
	ts.must(200, "GET", api.PathDeployments, ts.admin, nil, &deps)
	dep := deps[0].ID

	pages := []string{"/", "/?part=matrix", "/apps/web", "/apps/web/config", "/apps/web/config?group=prod", "/deployments/" + dep, "/deployments/" + dep + "?part=progress", "/audit"}
	forms := map[string]url.Values{
		"/apps/web/deploy":                 {"release": {"1"}, "group": {"prod"}, "confirm": {"yes"}},
		"/apps/web/rollback":               {"group": {"prod"}, "confirm": {"yes"}},
		"/apps/web/config":                 {"group": {"prod"}, "key": {"X"}, "value": {"1"}},
		"/apps/web/config/unset":           {"group": {"prod"}, "key": {"API_KEY"}},
		"/deployments/" + dep + "/promote": {"confirm": {"yes"}},
	}
	anon := uiClient{ts: ts}
	for _, p := range pages {
		ans := anon.do("GET", p, nil, nil)
		if strings.Contains(p, "part=") {
			if ans.status != 401 {
				t.Errorf("GET %s signed out: %d, want 401 for the script", p, ans.status)
			}
			continue
		}
		if ans.status != 303 || !strings.HasPrefix(ans.location, "/login") {
			t.Errorf("GET %s signed out: %d to %q, want 303 to /login", p, ans.status, ans.location)
		}
	}
	for p, f := range forms {
		if ans := anon.do("POST", p, f, nil); ans.status != 303 || !strings.HasPrefix(ans.location, "/login") {
			t.Errorf("POST %s signed out: %d to %q, want 303 to /login", p, ans.status, ans.location)
		}
	}
	// A bad token, an agent's credential: no cookie.
	for tok, want := range map[string]string{"ferry_nope_nope": "token", cred: "agent"} {
		ans := anon.do("POST", "/login", url.Values{"token": {tok}}, nil)
		if ans.status != 401 || !strings.Contains(ans.body, want) || len(ans.cookies) != 0 {
			t.Errorf("sign in with %q: %d, %d cookies, body lacks %q\n%s", tok[:8], ans.status, len(ans.cookies), want, ans.body)
		}
	}
	// An open redirect after sign-in is not offered.
	ans := anon.do("POST", "/login", url.Values{"token": {ts.admin}, "next": {"//evil.example/x"}}, nil)
	if ans.status != 303 || ans.location != "/" || len(ans.cookies) != 1 {
		t.Fatalf("sign in: %d to %q, cookies %v", ans.status, ans.location, ans.cookies)
	}
	ck := ans.cookies[0]
	if !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Value != ts.admin {
		t.Errorf("cookie %+v: want HttpOnly, Secure, SameSite=Strict", ck)
	}
	admin := uiClient{ts: ts, cookie: ts.admin}
	for _, p := range pages {
		if ans := admin.do("GET", p, nil, nil); ans.status != 200 {
			t.Errorf("GET %s as admin: %d\n%s", p, ans.status, ans.body)
		}
	}
	if body := admin.do("GET", "/apps/web/config?group=prod", nil, nil).body; strings.Contains(body, "s3cr3t-value") || !strings.Contains(body, api.Masked) {
		t.Errorf("config page: the secret is not masked")
	}
	if body := admin.do("GET", "/", nil, nil).body; !strings.Contains(body, "web-1") || !strings.Contains(body, "v1") || !strings.Contains(body, "healthy") {
		t.Errorf("overview lacks web-1 running v1 healthy:\n%s", body)
	}
	// Forms without the CSRF value, with another's, or from another site.
	csrf := admin.csrf("/apps/web")
	for name, tc := range map[string]struct {
		csrf   string
		origin string
	}{"no csrf": {"", ""}, "wrong csrf": {strings.Repeat("0", 32), ""}, "other origin": {csrf, "https://evil.example"}} {
		f := url.Values{"group": {"prod"}, "key": {"CSRF_" + strings.ReplaceAll(name, " ", "_")}, "value": {"1"}, "csrf": {tc.csrf}}
		hdr := map[string]string{}
		if tc.origin != "" {
			hdr["Origin"] = tc.origin
		}
		if ans := admin.do("POST", "/apps/web/config", f, hdr); ans.status != 403 {
			t.Errorf("%s: %d, want 403", name, ans.status)
		}
	}
	var cfg api.Config
	ts.must(200, "GET", "/v1/apps/web/config?group=prod", ts.admin, nil, &cfg)
	for _, v := range cfg.Vars {
		if strings.HasPrefix(v.Key, "CSRF_") {
			t.Errorf("a refused form set %s", v.Key)
		}
	}
	// With it, a deploy asks first and names what it does, then deploys.
	ans = admin.do("POST", "/apps/web/deploy", url.Values{"release": {"1"}, "group": {"prod"}, "csrf": {csrf}}, nil)
	if ans.status != 200 || !strings.Contains(ans.body, "Deploy web v1 (1.0.0) to prod?") || len(deps) != 1 {
		t.Errorf("deploy without confirm: %d\n%s", ans.status, ans.body)
	}

	// A viewer: pages yes, buttons no, and the forms refused by the API.
	viewer := uiClient{ts: ts, cookie: ts.token(api.TokenRequest{Name: "eve", Role: api.RoleViewer})}
	body := viewer.do("GET", "/apps/web", nil, nil).body
	if strings.Contains(body, "Deploy…") || strings.Contains(body, "Roll back…") {
		t.Errorf("a viewer sees deploy or rollback buttons")
	}
	if ans := viewer.do("GET", "/audit", nil, nil); ans.status != 403 {
		t.Errorf("audit as viewer: %d, want 403", ans.status)
	}
	vcsrf := viewer.csrf("/apps/web")
	for p, f := range forms {
		f = url.Values(f)
		f.Set("csrf", vcsrf)
		if ans := viewer.do("POST", p, f, nil); ans.status != 403 {
			t.Errorf("POST %s as viewer: %d, want 403\n%s", p, ans.status, ans.body)
		}
	}
	ts.must(200, "GET", api.PathDeployments, ts.admin, nil, &deps)
	if len(deps) != 1 {
		t.Errorf("%d deployments after the refused forms, want 1", len(deps))
	}
}

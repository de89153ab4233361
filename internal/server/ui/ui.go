// Package ui is ferry's web UI: server-rendered pages from Go templates
// embedded in the binary, with one small script that refreshes live parts
// of a page. Every page calls the server's own API in-process
// (client.NewLocal) with the signed-in user's token, so the UI can show
// and do exactly what that token may through the API, no more.
//
// The token lives in an HttpOnly, Secure, SameSite=Strict cookie; every
// form carries a CSRF value derived from it, and a POST without it (or
// from another origin) is refused.
package ui

import (
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// cookieName holds the signed-in user's API token.
const cookieName = "ferry_token"

// sessionTTL is how long a sign-in lasts in the browser.
const sessionTTL = 12 * time.Hour

// UI serves the pages. API is the server's API handler.
type UI struct {
	api   http.Handler
	log   *slog.Logger
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the UI over the API handler api.
func New(apiHandler http.Handler, log *slog.Logger) *UI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &UI{api: apiHandler, log: log, pages: map[string]*template.Template{}}
	for _, page := range []string{"login", "overview", "app", "deployment", "config", "audit", "confirm", "error", "logs"} {
		u.pages[page] = template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+page+".html"))
	}
	static, _ := fs.Sub(staticFS, "static")
	m := http.NewServeMux()
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /login", u.loginPage)
	m.HandleFunc("POST /login", u.login)
	m.HandleFunc("POST /logout", u.logout)
	m.Handle("GET /{$}", u.page(u.overview))
	m.Handle("GET /apps/{app}", u.page(u.appPage))
	m.Handle("POST /apps/{app}/deploy", u.action(u.deploy))
	m.Handle("POST /apps/{app}/rollback", u.action(u.rollback))
	m.Handle("GET /apps/{app}/config", u.page(u.configPage))
	m.Handle("POST /apps/{app}/config", u.action(u.setConfig))
	m.Handle("POST /apps/{app}/config/unset", u.action(u.unsetConfig))
	m.Handle("GET /apps/{app}/logs", u.page(u.logsPage))
	m.Handle("GET /deployments/{id}", u.page(u.deploymentPage))
	m.Handle("POST /deployments/{id}/promote", u.action(u.promote))
	m.Handle("GET /audit", u.page(u.auditPage))
	m.Handle("/", u.page(func(*http.Request, *session) (string, any, error) {
		return "", nil, ferry.Errorf(ferry.ENOTFOUND, "no such page")
	}))
	u.mux = m
	return u
}

// ServeHTTP serves a page with the UI's Content-Security-Policy; the
// server sets the headers every answer of it carries (HSTS, nosniff, …).
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	u.mux.ServeHTTP(w, r)
}

// session is a signed-in request: the user's API client and token record.
type session struct {
	c    *client.Client
	me   api.Token
	csrf string
}

// can says whether the session's token may change app in group; the API
// decides, this only hides what it would refuse.
func (s *session) can(role, app, group string) bool {
	rank := map[string]int{api.RoleViewer: 1, api.RoleDeployer: 2, api.RoleAdmin: 3}
	if rank[s.me.Role] < rank[role] {
		return false
	}
	in := func(list []string, v string) bool {
		if len(list) == 0 || v == "" {
			return true
		}
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	}
	return in(s.me.Apps, app) && in(s.me.Groups, group)
}

// csrfFor is the value every form of a session carries: derived from the
// token, which a page from another site cannot read from the cookie.
func csrfFor(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("ferry-ui-csrf"))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// open makes the session of r's cookie, or says why there is none.
func (u *UI) open(r *http.Request) (*session, error) {
	ck, err := r.Cookie(cookieName)
	if err != nil || ck.Value == "" {
		return nil, ferry.Errorf(ferry.EUNAUTH, "sign in")
	}
	c := client.NewLocal(u.api, ck.Value, r.RemoteAddr)
	me, err := c.Whoami(r.Context())
	if err != nil {
		return nil, err
	}
	if me.Role == api.RoleAgent {
		return nil, ferry.Errorf(ferry.EUNAUTH, "an agent's credential cannot sign in")
	}
	return &session{c: c, me: me, csrf: csrfFor(ck.Value)}, nil
}

// pageFunc renders a page: the template's name and its data.
type pageFunc func(r *http.Request, s *session) (page string, data any, err error)

// view is what every page's template gets.
type view struct {
	Title string
	Me    api.Token
	CSRF  string
	Path  string
	Data  any
	s     *session
}

// Can is session.can for templates.
func (v view) Can(role, app, group string) bool { return v.s != nil && v.s.can(role, app, group) }

// page serves a signed-in page; ?part=NAME renders only the template
// NAME, the live region the script refreshes.
func (u *UI) page(f pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := u.open(r)
		if err != nil {
			u.signIn(w, r, err)
			return
		}
		page, data, err := f(r, s)
		if err != nil {
			u.fail(w, r, s, err)
			return
		}
		u.render(w, r, http.StatusOK, page, s.view(page, r, data))
	})
}

// view is what a signed-in page's template gets.
func (s *session) view(page string, r *http.Request, data any) view {
	return view{Title: titleOf(page, r), Me: s.me, CSRF: s.csrf, Path: r.URL.Path, Data: data, s: s}
}

// formOK says whether a POST carries the session's CSRF value and comes
// from this site.
func (s *session) formOK(r *http.Request) bool {
	return hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) && sameOrigin(r)
}

// actionFunc does what a form asks and says where to go next; with page
// set instead it renders that page (a confirmation).
type actionFunc func(r *http.Request, s *session) (next, page string, data any, err error)

// action serves a form POST of a signed-in user, after checking its CSRF
// value and origin.
func (u *UI) action(f actionFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := u.open(r)
		if err != nil {
			u.signIn(w, r, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			u.fail(w, r, s, ferry.WrapError(ferry.EINVALID, err, "form"))
			return
		}
		if !s.formOK(r) {
			u.fail(w, r, s, ferry.Errorf(ferry.EDENIED, "this form did not come from this page (CSRF check): reload the page and try again"))
			return
		}
		next, page, data, err := f(r, s)
		if err != nil {
			u.fail(w, r, s, err)
			return
		}
		if page != "" {
			u.render(w, r, http.StatusOK, page, s.view(page, r, data))
			return
		}
		http.Redirect(w, r, next, http.StatusSeeOther)
	})
}

// sameOrigin refuses a request whose Origin (browsers send it with every
// POST) names another site.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	ou, err := url.Parse(o)
	return err == nil && ou.Host == r.Host
}

// signIn sends a request without a valid session to the sign-in page.
func (u *UI) signIn(w http.ResponseWriter, r *http.Request, err error) {
	if ferry.ErrorCode(err) != ferry.EUNAUTH {
		u.fail(w, r, nil, err)
		return
	}
	if r.URL.Query().Get("part") != "" {
		// A live region of a page whose session ended: the script reloads.
		http.Error(w, "sign in again", http.StatusUnauthorized)
		return
	}
	if _, cerr := r.Cookie(cookieName); cerr == nil {
		clearCookie(w)
	}
	q := url.Values{}
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		q.Set("next", r.URL.RequestURI())
	}
	if msg := err.Error(); msg != "sign in" {
		q.Set("why", msg)
	}
	http.Redirect(w, r, "/login?"+q.Encode(), http.StatusSeeOther)
}

// fail renders an error page with the status the API gave the error.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	code := ferry.ErrorCode(err)
	status := api.HTTPStatus(code)
	if code == ferry.EINTERNAL {
		u.log.Error("ui", "path", r.URL.Path, "err", err)
	}
	v := view{Title: http.StatusText(status), Path: r.URL.Path, Data: errView{Status: status, Message: err.Error()}}
	if s != nil {
		v.Me, v.CSRF, v.s = s.me, s.csrf, s
	}
	if r.URL.Query().Get("part") != "" {
		http.Error(w, err.Error(), status)
		return
	}
	u.render(w, r, status, "error", v)
}

type errView struct {
	Status  int
	Message string
}

// render writes page, or only its live part with ?part=NAME.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	t, ok := u.pages[page]
	if !ok {
		http.Error(w, "no template "+page, http.StatusInternalServerError)
		return
	}
	name := "layout"
	if part := r.URL.Query().Get("part"); part != "" && r.Method == http.MethodGet {
		if t.Lookup("part-"+part) == nil {
			http.Error(w, "no such part", http.StatusNotFound)
			return
		}
		name = "part-" + part
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, name, v); err != nil {
		u.log.Error("ui: render", "page", page, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}

func titleOf(page string, r *http.Request) string {
	switch page {
	case "app", "config":
		return r.PathValue("app")
	case "logs":
		return r.PathValue("app") + " logs"
	case "deployment":
		return "Deployment " + r.PathValue("id")
	case "audit":
		return "Audit"
	case "confirm":
		return "Confirm"
	}
	return "Overview"
}

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	u.render(w, r, http.StatusOK, "login", view{Title: "Sign in", Path: r.URL.Path, Data: loginView{Next: safeNext(q.Get("next")), Why: q.Get("why")}})
}

type loginView struct {
	Next, Why string
}

// login checks the token against the API and keeps it in the cookie.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	fail := func(msg string) {
		u.render(w, r, http.StatusUnauthorized, "login", view{Title: "Sign in", Path: r.URL.Path, Data: loginView{Next: next, Why: msg}})
	}
	if !sameOrigin(r) {
		fail("this form did not come from this server")
		return
	}
	if tok == "" {
		fail("paste an API token (ferry token create, or DATA/admin.token)")
		return
	}
	me, err := client.NewLocal(u.api, tok, r.RemoteAddr).Whoami(r.Context())
	if err != nil {
		fail(err.Error())
		return
	}
	if me.Role == api.RoleAgent {
		fail("an agent's credential cannot sign in")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: "/", MaxAge: int(sessionTTL / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	if s, err := u.open(r); err == nil && !s.formOK(r) {
		u.fail(w, r, s, ferry.Errorf(ferry.EDENIED, "this form did not come from this page (CSRF check)"))
		return
	}
	clearCookie(w)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// safeNext keeps a redirect after sign-in on this site: next must be a
// path of this server ("/apps/web?group=prod"), else it is "/". Browsers
// drop tabs and newlines from a URL and read a backslash as "/", so
// "/<TAB>/evil" and "/\evil" are "//evil" to them: another host. Hence one
// "/" first, then no "/", nothing but printable characters other than
// space and backslash, and the same of the path once percent-decoded
// ("/%2F/evil"), in case something decodes it again on the way.
func safeNext(next string) string {
	if !localPath(next) {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Opaque != "" || u.User != nil || u.Host != "" || !localPath(u.Path) {
		return "/"
	}
	return next
}

// localPath says whether p starts with exactly one "/" and holds only
// printable characters other than space and backslash.
func localPath(p string) bool {
	if p == "" || p[0] != '/' || strings.HasPrefix(p, "//") || !utf8.ValidString(p) {
		return false
	}
	for _, r := range p {
		if !unicode.IsPrint(r) || r == ' ' || r == '\\' {
			return false
		}
	}
	return true
}

package ui

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
)

// overviewView is the hosts × apps matrix and the deployments running.
type overviewView struct {
	Matrix  matrix
	Running []api.Deployment
}

func (u *UI) overview(r *http.Request, s *session) (string, any, error) {
	st, err := s.c.Status(r.Context(), "")
	if err != nil {
		return "", nil, err
	}
	v := overviewView{Matrix: newMatrix(st, time.Now())}
	deps, err := s.c.Deployments(r.Context(), "", "")
	if err != nil {
		return "", nil, err
	}
	for _, d := range deps {
		if d.State == api.DeployRunning || d.State == api.DeployWaiting {
			v.Running = append(v.Running, d)
		}
	}
	return "overview", v, nil
}

// appView is one app: where it runs, its releases, its deployments.
type appView struct {
	App         string
	Groups      []groupRow
	Releases    []releaseRow
	Deployments []api.Deployment
	AllGroups   []string       // groups a release can be deployed to
	Artifacts   []api.Artifact // published, newest first
}

type groupRow struct {
	Group   string
	Release int
	Waiting *api.Deployment // a canary waiting for promote
	Running *api.Deployment
}

type releaseRow struct {
	api.Release
	Commit string
	Dirty  bool
	Groups []string // groups that run it
}

func (u *UI) appPage(r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	app := r.PathValue("app")
	v := appView{App: app}
	apps, err := s.c.Apps(ctx)
	if err != nil {
		return "", nil, err
	}
	i := slices.IndexFunc(apps, func(a api.App) bool { return a.Name == app })
	if i < 0 {
		return "", nil, ferry.Errorf(ferry.ENOTFOUND, "no app %s: publish an artifact of it first", app)
	}
	rels, err := s.c.Releases(ctx, app)
	if err != nil {
		return "", nil, err
	}
	arts, err := s.c.Artifacts(ctx)
	if err != nil {
		return "", nil, err
	}
	deps, err := s.c.Deployments(ctx, app, "")
	if err != nil {
		return "", nil, err
	}
	st, err := s.c.Status(ctx, "")
	if err != nil {
		return "", nil, err
	}
	byGroup := map[string]int{}
	for _, g := range apps[i].Groups {
		row := groupRow{Group: g.Group, Release: g.Release}
		byGroup[g.Group] = g.Release
		for j := range deps {
			d := &deps[j]
			if d.Group == g.Group && d.State == api.DeployWaiting && row.Waiting == nil {
				row.Waiting = d
			}
			if d.Group == g.Group && d.State == api.DeployRunning && row.Running == nil {
				row.Running = d
			}
		}
		v.Groups = append(v.Groups, row)
	}
	groups := map[string]bool{}
	for _, g := range apps[i].Groups {
		groups[g.Group] = true
	}
	for _, h := range st.Hosts {
		for _, g := range h.Groups {
			groups[g] = true
		}
	}
	for g := range groups {
		if s.can(api.RoleDeployer, app, g) {
			v.AllGroups = append(v.AllGroups, g)
		}
	}
	slices.Sort(v.AllGroups)
	meta := map[string]api.Artifact{}
	for _, a := range arts {
		meta[a.SHA256] = a
		if a.App == app {
			v.Artifacts = append(v.Artifacts, a)
		}
	}
	slices.SortFunc(v.Artifacts, func(a, b api.Artifact) int { return b.Uploaded.Compare(a.Uploaded) })
	slices.SortFunc(rels, func(a, b api.Release) int { return b.Number - a.Number })
	for _, rel := range rels {
		row := releaseRow{Release: rel, Commit: meta[rel.SHA256].Commit, Dirty: meta[rel.SHA256].Dirty}
		for g, n := range byGroup {
			if n == rel.Number {
				row.Groups = append(row.Groups, g)
			}
		}
		slices.Sort(row.Groups)
		v.Releases = append(v.Releases, row)
	}
	slices.SortFunc(deps, func(a, b api.Deployment) int { return b.Started.Compare(a.Started) })
	v.Deployments = deps[:min(len(deps), 15)]
	return "app", v, nil
}

// confirmView asks before a deploy, rollback or promote.
type confirmView struct {
	Action   string // the form's path
	Verb     string // Deploy, Roll back, Promote
	Question string
	Back     string
	Fields   map[string]string
}

// deploy rolls out a release (release=N) or a published artifact with
// the newest config (sha256=…), after a confirmation that names it.
func (u *UI) deploy(r *http.Request, s *session) (string, string, any, error) {
	app, group, sum := r.PathValue("app"), r.PostFormValue("group"), r.PostFormValue("sha256")
	n, _ := strconv.Atoi(r.PostFormValue("release"))
	if (n < 1 && sum == "") || group == "" {
		return "", "", nil, ferry.Errorf(ferry.EINVALID, "pick a release or an artifact, and a group")
	}
	req := api.DeployRequest{App: app, Group: group, Release: n}
	if n < 1 {
		req.SHA256 = sum
	}
	if r.PostFormValue("confirm") != "yes" {
		what, fields, err := u.describe(r, s, app, n, sum)
		if err != nil {
			return "", "", nil, err
		}
		fields["group"] = group
		return "", "confirm", confirmView{Action: r.URL.Path, Verb: "Deploy", Back: "/apps/" + app,
			Question: fmt.Sprintf("Deploy %s to %s?", what, group), Fields: fields}, nil
	}
	d, err := s.c.Deploy(r.Context(), req)
	if err != nil {
		return "", "", nil, err
	}
	return "/deployments/" + d.ID, "", nil, nil
}

// describe names release n, or the artifact sum, for a confirmation.
func (u *UI) describe(r *http.Request, s *session, app string, n int, sum string) (string, map[string]string, error) {
	if n > 0 {
		rels, err := s.c.Releases(r.Context(), app)
		if err != nil {
			return "", nil, err
		}
		for _, rel := range rels {
			if rel.Number == n {
				return fmt.Sprintf("%s v%d (%s)", app, n, rel.Version), map[string]string{"release": strconv.Itoa(n)}, nil
			}
		}
		return "", nil, ferry.Errorf(ferry.ENOTFOUND, "%s has no release v%d", app, n)
	}
	arts, err := s.c.Artifacts(r.Context())
	if err != nil {
		return "", nil, err
	}
	for _, a := range arts {
		if a.SHA256 == sum && a.App == app {
			return fmt.Sprintf("%s %s (artifact %.12s, with the newest config)", app, a.Version, sum), map[string]string{"sha256": sum}, nil
		}
	}
	return "", nil, ferry.Errorf(ferry.ENOTFOUND, "%s has no published artifact %s", app, sum)
}

func (u *UI) rollback(r *http.Request, s *session) (string, string, any, error) {
	app, group := r.PathValue("app"), r.PostFormValue("group")
	if group == "" {
		return "", "", nil, ferry.Errorf(ferry.EINVALID, "pick a group")
	}
	// The confirmation names the release the server would pick, and the
	// form asks for exactly that one: a deployment finishing in between
	// does not change what was confirmed.
	n, _ := strconv.Atoi(r.PostFormValue("release"))
	if r.PostFormValue("confirm") != "yes" {
		plan, err := s.c.Rollback(r.Context(), api.RollbackRequest{App: app, Group: group, DryRun: true})
		if err != nil {
			return "", "", nil, err
		}
		what, fields, err := u.describe(r, s, app, plan.Release, "")
		if err != nil {
			return "", "", nil, err
		}
		from := ""
		if plan.From > 0 {
			from = fmt.Sprintf(" from v%d", plan.From)
		}
		fields["group"] = group
		return "", "confirm", confirmView{Action: r.URL.Path, Verb: "Roll back", Back: "/apps/" + app,
			Question: fmt.Sprintf("Roll %s back%s to %s, the last release healthy on every host?", group, from, what),
			Fields:   fields}, nil
	}
	d, err := s.c.Rollback(r.Context(), api.RollbackRequest{App: app, Group: group, Release: n})
	if err != nil {
		return "", "", nil, err
	}
	return "/deployments/" + d.ID, "", nil, nil
}

func (u *UI) promote(r *http.Request, s *session) (string, string, any, error) {
	id := r.PathValue("id")
	if r.PostFormValue("confirm") != "yes" {
		d, _, err := s.c.Deployment(r.Context(), id, 0, 0)
		if err != nil {
			return "", "", nil, err
		}
		return "", "confirm", confirmView{Action: r.URL.Path, Verb: "Promote", Back: "/deployments/" + id,
			Question: fmt.Sprintf("Promote %s v%d on %s: roll it out to the rest of the group?", d.App, d.Release, d.Group)}, nil
	}
	d, err := s.c.Promote(r.Context(), id)
	if err != nil {
		return "", "", nil, err
	}
	return "/deployments/" + d.ID, "", nil, nil
}

// deploymentView is a rollout batch by batch.
type deploymentView struct {
	D          api.Deployment
	Batches    []batch
	RolledBack []api.Deployment // the rollbacks of this deployment
}

type batch struct {
	N     int
	Hosts []hostRow
}

type hostRow struct {
	Host string
	api.HostRollout
}

func (u *UI) deploymentPage(r *http.Request, s *session) (string, any, error) {
	d, _, err := s.c.Deployment(r.Context(), r.PathValue("id"), 0, 0)
	if err != nil {
		return "", nil, err
	}
	v := deploymentView{D: d}
	by := map[int][]hostRow{}
	for h, hr := range d.Hosts {
		by[hr.Batch] = append(by[hr.Batch], hostRow{Host: h, HostRollout: hr})
	}
	for n, hs := range by {
		slices.SortFunc(hs, func(a, b hostRow) int { return cmp.Compare(a.Host, b.Host) })
		v.Batches = append(v.Batches, batch{N: n, Hosts: hs})
	}
	slices.SortFunc(v.Batches, func(a, b batch) int { return a.N - b.N })
	deps, err := s.c.Deployments(r.Context(), d.App, d.Group)
	if err != nil {
		return "", nil, err
	}
	for _, o := range deps {
		if o.RollbackOf == d.ID {
			v.RolledBack = append(v.RolledBack, o)
		}
	}
	return "deployment", v, nil
}

// configView is an app's config for one group and its history.
type configView struct {
	App     string
	Group   string
	Groups  []string
	Config  api.Config
	History []revisionRow
}

type revisionRow struct {
	api.ConfigRevision
	Diff []api.ConfigDiff
}

func (u *UI) configPage(r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	app, group := r.PathValue("app"), r.URL.Query().Get("group")
	cfg, err := s.c.Config(ctx, app, group, 0)
	if err != nil {
		return "", nil, err
	}
	v := configView{App: app, Group: group, Config: cfg}
	if apps, err := s.c.Apps(ctx); err == nil {
		for _, a := range apps {
			if a.Name == app {
				for _, g := range a.Groups {
					v.Groups = append(v.Groups, g.Group)
				}
			}
		}
	}
	hist, err := s.c.ConfigHistory(ctx, app)
	if err != nil {
		return "", nil, err
	}
	for i, rev := range hist {
		if i == 10 {
			break
		}
		row := revisionRow{ConfigRevision: rev}
		if rev.Rev > 1 {
			row.Diff, _ = s.c.ConfigDiff(ctx, app, group, rev.Rev-1, rev.Rev)
		}
		v.History = append(v.History, row)
	}
	return "config", v, nil
}

func (u *UI) setConfig(r *http.Request, s *session) (string, string, any, error) {
	app, group := r.PathValue("app"), r.PostFormValue("group")
	key := r.PostFormValue("key")
	if key == "" {
		return "", "", nil, ferry.Errorf(ferry.EINVALID, "a config key is needed")
	}
	_, err := s.c.ChangeConfig(r.Context(), app, api.ConfigChange{Group: group, Set: map[string]string{key: r.PostFormValue("value")}, Secret: r.PostFormValue("secret") == "on"})
	if err != nil {
		return "", "", nil, err
	}
	return configURL(app, group), "", nil, nil
}

func (u *UI) unsetConfig(r *http.Request, s *session) (string, string, any, error) {
	app, group := r.PathValue("app"), r.PostFormValue("group")
	_, err := s.c.ChangeConfig(r.Context(), app, api.ConfigChange{Group: group, Unset: []string{r.PostFormValue("key")}})
	if err != nil {
		return "", "", nil, err
	}
	return configURL(app, group), "", nil, nil
}

func configURL(app, group string) string {
	if group == "" {
		return "/apps/" + app + "/config"
	}
	return "/apps/" + app + "/config?group=" + group
}

// auditView is the audit log, newest first, as filtered.
type auditView struct {
	Q      client.AuditQuery
	Events []api.AuditEvent
}

func (u *UI) auditPage(r *http.Request, s *session) (string, any, error) {
	q := r.URL.Query()
	aq := client.AuditQuery{App: q.Get("app"), Group: q.Get("group"), Who: q.Get("who"), Limit: 300}
	evs, err := s.c.AuditOf(r.Context(), aq)
	if err != nil {
		return "", nil, err
	}
	slices.Reverse(evs)
	return "audit", auditView{Q: aq, Events: evs}, nil
}

// matrix is hosts × apps: each cell what the host's agent last reported.
type matrix struct {
	Apps []string
	Rows []matrixRow
}

type matrixRow struct {
	Host     string
	Groups   []string
	Lost     bool
	LastSeen string
	Cells    []cell
}

// cell is one app on one host. Health is said in words; Class colours it.
type cell struct {
	Present bool
	Label   string
	Health  string // healthy, starting, unhealthy, failed, stopped
	Class   string
	Age     string
	Error   string
}

func newMatrix(st api.Status, now time.Time) matrix {
	var m matrix
	apps := map[string]bool{}
	for _, h := range st.Hosts {
		for a := range h.Apps {
			apps[a] = true
		}
	}
	for a := range apps {
		m.Apps = append(m.Apps, a)
	}
	slices.Sort(m.Apps)
	hosts := slices.Clone(st.Hosts)
	slices.SortFunc(hosts, func(a, b api.Host) int { return cmp.Compare(a.Name, b.Name) })
	for _, h := range hosts {
		row := matrixRow{Host: h.Name, Groups: h.Groups, Lost: h.Lost, LastSeen: ago(now, h.LastSeen)}
		for _, a := range m.Apps {
			row.Cells = append(row.Cells, cellOf(h.Apps[a], h.Lost, now))
		}
		m.Rows = append(m.Rows, row)
	}
	return m
}

func cellOf(a *api.AppStatus, lost bool, now time.Time) cell {
	if a == nil {
		return cell{Class: "none"}
	}
	c := cell{Present: true, Label: cmp.Or(a.Label, a.Release), Error: a.Error}
	var started time.Time
	healthy, starting := 0, 0
	for _, p := range a.Processes {
		if !p.Started.IsZero() && (started.IsZero() || p.Started.Before(started)) {
			started = p.Started
		}
		switch {
		case p.Health == "unhealthy" || p.CrashLoop:
			c.Health = "unhealthy"
			c.Error = cmp.Or(c.Error, p.LastError)
		case p.Ready || p.Health == "healthy":
			healthy++
		default:
			starting++
		}
	}
	switch {
	case a.State == "failed":
		c.Health = "failed"
	case c.Health != "":
	case len(a.Processes) == 0:
		c.Health = "stopped"
	case starting > 0:
		c.Health = "starting"
	default:
		c.Health = "healthy"
	}
	c.Class = map[string]string{"healthy": "ok", "starting": "warn", "stopped": "warn", "unhealthy": "bad", "failed": "bad"}[c.Health]
	if lost {
		c.Class = "lost"
	}
	if !started.IsZero() {
		c.Age = ago(now, started)
	}
	return c
}

// ago is a short age: 45s, 12m, 3h, 2d.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(int(d/time.Second), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// logsView is the recent log lines of an app's processes.
type logsView struct {
	App, Host, Process string
	Lines              []api.LogLine
	Errors             []api.LogLine
}

// logsPage shows the last lines of each instance's log from the hosts
// that run the app; its live part is fetched again every 2 s.
func (u *UI) logsPage(r *http.Request, s *session) (string, any, error) {
	q := r.URL.Query()
	v := logsView{App: r.PathValue("app"), Host: q.Get("host"), Process: q.Get("process")}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	err := s.c.Logs(ctx, client.LogQuery{App: v.App, Host: v.Host, Process: v.Process, Lines: 100}, func(l api.LogLine) {
		if l.Error != "" {
			v.Errors = append(v.Errors, l)
		} else {
			v.Lines = append(v.Lines, l)
		}
	})
	if err != nil {
		return "", nil, err
	}
	// Interleave the hosts' and instances' lines by their time.
	slices.SortStableFunc(v.Lines, func(a, b api.LogLine) int {
		ta, _, _ := strings.Cut(a.Line, " ")
		tb, _, _ := strings.Cut(b.Line, " ")
		return cmp.Compare(ta, tb)
	})
	if len(v.Lines) > 500 {
		v.Lines = v.Lines[len(v.Lines)-500:]
	}
	return "logs", v, nil
}

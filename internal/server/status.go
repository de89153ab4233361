package server

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
)

// status answers hosts × apps as the agents last reported them, limited
// to what p may see; ?app= narrows it to one app.
func (s *Server) status(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	app := r.URL.Query().Get("app")
	hosts, err := s.repo.Hosts(ctx)
	if err != nil {
		return err
	}
	reps, _, err := s.repo.Reports(ctx)
	if err != nil {
		return err
	}
	st := api.Status{Hosts: []api.Host{}}
	now := time.Now()
	for _, h := range hosts {
		groups := slices.DeleteFunc(slices.Clone(h.Groups), func(g string) bool { return !p.coversGroup(g) })
		if len(groups) == 0 {
			continue
		}
		// A token scoped to some groups sees only the apps the host runs
		// through one of them, not what another group runs there.
		var through map[string]repo.DesiredEntry
		if !p.coversGroup("") {
			d, err := s.repo.Desired(ctx, h.Name)
			if err != nil {
				return err
			}
			through = d.Apps
		}
		seen := s.lastSeen(h, reps)
		out := api.Host{Name: h.Name, Groups: groups, LastSeen: seen, Lost: now.Sub(seen) > s.cfg.HostLostAfter, Apps: map[string]*api.AppStatus{},
			OS: reps[h.Name].State.OS, Arch: reps[h.Name].State.Arch}
		for name, as := range reps[h.Name].State.Apps {
			if (app != "" && name != app) || !p.coversApp(name) {
				continue
			}
			if through != nil && !p.coversGroup(through[name].Group) {
				continue
			}
			out.Apps[name] = as
		}
		st.Hosts = append(st.Hosts, out)
	}
	return writeJSON(w, http.StatusOK, st)
}

// listApps answers the apps the server knows from artifacts and releases.
func (s *Server) listApps(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	arts, err := s.repo.Artifacts(ctx)
	if err != nil {
		return err
	}
	rels, err := s.repo.Releases(ctx, "")
	if err != nil {
		return err
	}
	grs, err := s.repo.GroupReleases(ctx)
	if err != nil {
		return err
	}
	apps := map[string]*api.App{}
	get := func(name string) *api.App {
		if apps[name] == nil {
			apps[name] = &api.App{Name: name, Groups: []api.GroupApp{}}
		}
		return apps[name]
	}
	for _, a := range arts {
		get(a.App).Artifacts++
	}
	for _, rel := range rels {
		get(rel.App).Releases++
	}
	for _, g := range grs {
		if p.allowed(g.App, g.Group) {
			a := get(g.App)
			a.Groups = append(a.Groups, api.GroupApp{Group: g.Group, Release: g.Release})
		}
	}
	out := []api.App{}
	for _, a := range apps {
		if p.coversApp(a.Name) {
			out = append(out, *a)
		}
	}
	slices.SortFunc(out, func(a, b api.App) int { return cmp.Compare(a.Name, b.Name) })
	return writeJSON(w, http.StatusOK, out)
}

// listReleases answers an app's releases, oldest first.
func (s *Server) listReleases(w http.ResponseWriter, r *http.Request, p *principal) error {
	app := r.PathValue("app")
	if err := p.scopeApp(app); err != nil {
		return err
	}
	rels, err := s.repo.Releases(r.Context(), app)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rels)
}

package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/state"
)

// Config keys: a head per app, and an immutable snapshot per revision, so
// that a release names the config it was made with and a rollback gets it
// back.
const (
	prefixConfigHead = "confighead/" // confighead/<app> → configHead
	prefixConfigRev  = "configrev/"  // configrev/<app>/<%08d> → configSnapshot
)

func configHeadKey(app string) string       { return prefixConfigHead + app }
func configRevKey(app string, n int) string { return fmt.Sprintf("%s%s/%08d", prefixConfigRev, app, n) }

type configHead struct {
	Rev int `json:"rev"`
}

// storedVar is one variable at rest: a plain value, or a secret sealed
// with the server's key. Sum is a keyed digest of the value, so that
// revisions can be compared without opening secrets.
type storedVar struct {
	Value  string `json:"value,omitempty"`
	Sealed string `json:"sealed,omitempty"`
	Secret bool   `json:"secret,omitempty"`
	Sum    string `json:"sum"`
}

// configSnapshot is an app's whole config at one revision.
type configSnapshot struct {
	api.ConfigRevision
	Scopes map[string]map[string]storedVar `json:"scopes"` // api.ScopeApp or a group → key → var
}

// checkKey refuses names that are no environment variable, and those
// the agent sets itself.
func checkEnvKey(k string) error {
	switch {
	case !ferry.IsEnvName(k):
		return ferry.Errorf(ferry.EINVALID, "config key %q: use letters, digits and _, not starting with a digit", k)
	case strings.HasPrefix(k, "FERRY_"), k == "PORT", k == "NOTIFY_SOCKET", strings.HasPrefix(k, "LISTEN_"):
		return ferry.Errorf(ferry.EINVALID, "config key %q is set by the agent; choose another name", k)
	}
	return nil
}

// changeConfig applies a ConfigChange as a new revision.
func (s *Server) changeConfig(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	app := r.PathValue("app")
	var ch api.ConfigChange
	if err := decode(r, &ch); err != nil {
		return err
	}
	if err := ferry.CheckAppName(app); err != nil {
		return fmt.Errorf("app: %w", err)
	}
	if ch.Group != "" {
		if err := ferry.CheckGroupName(ch.Group); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	if err := p.scope(app, ch.Group); err != nil {
		return err
	}
	if len(ch.Set) == 0 && len(ch.Unset) == 0 {
		return ferry.Errorf(ferry.EINVALID, "nothing to change: give KEY=VALUE to set or KEY to unset")
	}
	for k, v := range ch.Set {
		if err := checkEnvKey(k); err != nil {
			return err
		}
		if strings.ContainsRune(v, 0) {
			return ferry.Errorf(ferry.EINVALID, "config %s: a value cannot hold a NUL byte", k)
		}
		if slices.Contains(ch.Unset, k) {
			return ferry.Errorf(ferry.EINVALID, "config %s: both set and unset", k)
		}
	}
	scope := ch.Group
	if scope == "" {
		scope = api.ScopeApp
	}
	// Seal once, outside the retry loop: a retry must not re-encrypt.
	vars := make(map[string]storedVar, len(ch.Set))
	for k, v := range ch.Set {
		sv := storedVar{Secret: ch.Secret, Sum: s.sealer.sum(v)}
		if ch.Secret {
			sealed, err := s.sealer.seal(v)
			if err != nil {
				return err
			}
			sv.Sealed = sealed
		} else {
			sv.Value = v
		}
		vars[k] = sv
	}
	for {
		var head configHead
		headRev, err := s.getJSON(ctx, configHeadKey(app), &head)
		if err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
			return err
		}
		snap, err := s.configAt(ctx, app, head.Rev)
		if err != nil {
			return err
		}
		next := configSnapshot{Scopes: map[string]map[string]storedVar{}}
		for sc, m := range snap.Scopes {
			next.Scopes[sc] = maps.Clone(m)
		}
		cur := next.Scopes[scope]
		if cur == nil {
			cur = map[string]storedVar{}
			next.Scopes[scope] = cur
		}
		for _, k := range ch.Unset {
			if _, ok := cur[k]; !ok {
				return ferry.Errorf(ferry.ENOTFOUND, "config %s is not set %s", k, scopeName(scope))
			}
			delete(cur, k)
		}
		maps.Copy(cur, vars)
		if len(cur) == 0 {
			delete(next.Scopes, scope)
		}
		next.ConfigRevision = api.ConfigRevision{
			App: app, Rev: head.Rev + 1, Group: ch.Group, Set: slices.Sorted(maps.Keys(ch.Set)), Secret: ch.Secret,
			Unset: slices.Sorted(slices.Values(ch.Unset)), By: p.who(), At: time.Now().UTC(),
		}
		hb, _ := json.Marshal(configHead{Rev: next.Rev})
		sb, err := json.Marshal(next)
		if err != nil {
			return err
		}
		_, ok, err := s.st.CompareAndSwapMany(ctx, []state.Swap{
			{Key: configHeadKey(app), Rev: headRev, Value: hb},
			{Key: configRevKey(app, next.Rev), Value: sb},
		})
		if err != nil {
			return err
		}
		if !ok {
			continue // another change came first: apply this one on top
		}
		what := fmt.Sprintf("rev %d %s: set %v unset %v", next.Rev, scopeName(scope), next.Set, next.Unset)
		if ch.Secret {
			what += " (secret)"
		}
		s.auditReq(r, p, api.AuditEvent{Action: "config.change", Target: "config/" + app, Detail: what, App: app, Group: ch.Group})
		return writeJSON(w, http.StatusOK, next.ConfigRevision)
	}
}

func scopeName(scope string) string {
	if scope == api.ScopeApp {
		return "app-wide"
	}
	return "in group " + scope
}

// configAt reads app's snapshot at rev; rev 0 is the empty config.
// Snapshots never change, so they are cached.
func (s *Server) configAt(ctx context.Context, app string, rev int) (configSnapshot, error) {
	if rev == 0 {
		return configSnapshot{ConfigRevision: api.ConfigRevision{App: app}}, nil
	}
	key := configRevKey(app, rev)
	if v, ok := s.snapshots.Load(key); ok {
		return v.(configSnapshot), nil
	}
	var snap configSnapshot
	found, err := s.lookup(ctx, key, &snap)
	if err != nil {
		return snap, err
	}
	if !found {
		return snap, ferry.Errorf(ferry.ENOTFOUND, "app %s has no config revision %d", app, rev)
	}
	s.snapshots.Store(key, snap)
	return snap, nil
}

// configHeadRev is app's newest config revision, 0 when it has none.
func (s *Server) configHeadRev(ctx context.Context, app string) (int, error) {
	var head configHead
	_, err := s.getJSON(ctx, configHeadKey(app), &head)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return 0, nil
	}
	return head.Rev, err
}

// effective is what group sees of snap: app-wide values with the group's
// overrides, each with the scope it came from.
func effective(snap configSnapshot, group string) map[string]scopedVar {
	out := map[string]scopedVar{}
	for k, v := range snap.Scopes[api.ScopeApp] {
		out[k] = scopedVar{v, api.ScopeApp}
	}
	if group != "" {
		for k, v := range snap.Scopes[group] {
			out[k] = scopedVar{v, group}
		}
	}
	return out
}

// view lists snap's variables by key and scope: what group sees (its own
// values over the app-wide ones), or every scope's when group is "".
func view(snap configSnapshot, group string) map[[2]string]storedVar {
	m := map[[2]string]storedVar{}
	if group != "" {
		for k, v := range effective(snap, group) {
			m[[2]string{k, v.scope}] = v.storedVar
		}
		return m
	}
	for scope, vars := range snap.Scopes {
		for k, v := range vars {
			m[[2]string{k, scope}] = v
		}
	}
	return m
}

// scopedVar is a variable with the scope it comes from.
type scopedVar struct {
	storedVar
	scope string
}

// envFor is the environment a release made at config rev gets in group,
// secrets opened: only ever sent to that group's agents.
func (s *Server) envFor(ctx context.Context, app string, rev int, group string) (map[string]string, error) {
	snap, err := s.configAt(ctx, app, rev)
	if err != nil {
		return nil, err
	}
	vars := effective(snap, group)
	if len(vars) == 0 {
		return nil, nil
	}
	env := make(map[string]string, len(vars))
	for k, v := range vars {
		if !v.Secret {
			env[k] = v.Value
			continue
		}
		plain, err := s.sealer.open(v.Sealed)
		if err != nil {
			return nil, fmt.Errorf("config %s of %s rev %d: %w", k, app, rev, err)
		}
		env[k] = plain
	}
	return env, nil
}

// getConfig answers an app's config for a group (or every scope when no
// group is given), at ?rev= or the newest revision, secrets masked.
func (s *Server) getConfig(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	app, group := r.PathValue("app"), r.URL.Query().Get("group")
	if err := p.readScope(app, group); err != nil {
		return err
	}
	rev, err := s.revParam(ctx, r, "rev", app)
	if err != nil {
		return err
	}
	snap, err := s.configAt(ctx, app, rev)
	if err != nil {
		return err
	}
	out := api.Config{App: app, Group: group, Rev: rev, Vars: []api.ConfigVar{}}
	add := func(k string, v storedVar, scope string) {
		cv := api.ConfigVar{Key: k, Value: v.Value, Secret: v.Secret, Scope: scope}
		if v.Secret {
			cv.Value = api.Masked
		}
		out.Vars = append(out.Vars, cv)
	}
	for ks, v := range view(snap, group) {
		if p.readsScope(ks[1]) {
			add(ks[0], v, ks[1])
		}
	}
	slices.SortFunc(out.Vars, func(a, b api.ConfigVar) int {
		return strings.Compare(a.Key+"\x00"+a.Scope, b.Key+"\x00"+b.Scope)
	})
	return writeJSON(w, http.StatusOK, out)
}

// revParam reads a revision query parameter; absent means the newest.
func (s *Server) revParam(ctx context.Context, r *http.Request, name, app string) (int, error) {
	v := strings.TrimPrefix(r.URL.Query().Get(name), "rev")
	if v == "" {
		return s.configHeadRev(ctx, app)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, ferry.Errorf(ferry.EINVALID, "%s %q: a config revision number", name, v)
	}
	return n, nil
}

// configHistory lists an app's config revisions, newest first.
func (s *Server) configHistory(w http.ResponseWriter, r *http.Request, p *principal) error {
	app := r.PathValue("app")
	if err := p.scopeApp(app); err != nil {
		return err
	}
	snaps, err := listJSON[configSnapshot](r.Context(), s.st, prefixConfigRev+app+"/")
	if err != nil {
		return err
	}
	out := make([]api.ConfigRevision, 0, len(snaps))
	for i := len(snaps) - 1; i >= 0; i-- {
		if p.readsScope(cmp.Or(snaps[i].Group, api.ScopeApp)) {
			out = append(out, snaps[i].ConfigRevision)
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// configDiff compares two revisions, every scope or one group's view;
// secrets show only that they changed.
func (s *Server) configDiff(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	app, group := r.PathValue("app"), r.URL.Query().Get("group")
	if err := p.readScope(app, group); err != nil {
		return err
	}
	from, err := s.revParam(ctx, r, "from", app)
	if err != nil {
		return err
	}
	to, err := s.revParam(ctx, r, "to", app)
	if err != nil {
		return err
	}
	a, err := s.configAt(ctx, app, from)
	if err != nil {
		return err
	}
	b, err := s.configAt(ctx, app, to)
	if err != nil {
		return err
	}
	show := func(v storedVar) string {
		if v.Secret {
			return api.Masked
		}
		return v.Value
	}
	fa, fb := view(a, group), view(b, group)
	for _, m := range []map[[2]string]storedVar{fa, fb} {
		maps.DeleteFunc(m, func(k [2]string, _ storedVar) bool { return !p.readsScope(k[1]) })
	}
	out := []api.ConfigDiff{}
	for key, old := range fa {
		nv, ok := fb[key]
		switch {
		case !ok:
			out = append(out, api.ConfigDiff{Key: key[0], Scope: key[1], Change: "removed", Old: show(old), Secret: old.Secret})
		case nv.Sum != old.Sum || nv.Secret != old.Secret:
			out = append(out, api.ConfigDiff{Key: key[0], Scope: key[1], Change: "changed", Old: show(old), New: show(nv), Secret: old.Secret || nv.Secret})
		}
	}
	for key, nv := range fb {
		if _, ok := fa[key]; !ok {
			out = append(out, api.ConfigDiff{Key: key[0], Scope: key[1], Change: "added", New: show(nv), Secret: nv.Secret})
		}
	}
	slices.SortFunc(out, func(x, y api.ConfigDiff) int { return strings.Compare(x.Key+"\x00"+x.Scope, y.Key+"\x00"+y.Scope) })
	return writeJSON(w, http.StatusOK, out)
}

// readScope checks a read of app's config as group sees it, or of every
// scope when group is "": then readsScope leaves out the groups p may
// not see.
func (p *principal) readScope(app, group string) error {
	if group == "" {
		return p.scopeApp(app)
	}
	return p.scope(app, group)
}

// readsScope reports whether p may read config variables of scope (a
// group, or api.ScopeApp: app-wide values, which every group's hosts see).
func (p *principal) readsScope(scope string) bool {
	return scope == api.ScopeApp || p.coversGroup(scope)
}

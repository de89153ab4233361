package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/state"
)

// Deployment is a deployment as stored, with what its rollout needs to
// resume.
type Deployment struct {
	api.Deployment
	SHA256   string `json:"sha256,omitempty"` // the release's artifact; "" when Release is 0 (remove the app)
	Promoted bool   `json:"promoted,omitempty"`
	Child    string `json:"child,omitempty"` // the automatic rollback of this one
	Auto     bool   `json:"auto,omitempty"`  // an automatic rollback, driven by its parent
}

// DeploymentRef is where a deployment's record is: its id's index entry.
type DeploymentRef struct {
	App   string `json:"app"`
	Group string `json:"group"`
}

// Deployments are keyed by app × group, so the history of one app in one
// group is one listing; an id finds its record through deployid/<id>,
// written once with the record and never changed.
func deployKey(app, group, id string) string { return PrefixDeploys + app + "/" + group + "/" + id }
func deployIDKey(id string) string           { return PrefixDeployIDs + id }

// DeploymentKey is the key of deployment id's record, for blocking
// queries on it; ENOTFOUND when there is no such deployment.
func (r *Repo) DeploymentKey(ctx context.Context, id string) (string, error) {
	if id == "" || strings.Contains(id, "/") {
		return "", ferry.Errorf(ferry.ENOTFOUND, "no deployment %q", id)
	}
	var ref DeploymentRef
	found, err := Lookup(ctx, r.st, deployIDKey(id), &ref)
	if err != nil {
		return "", fmt.Errorf("deployment %s: %w", id, err)
	}
	if !found {
		return "", ferry.Errorf(ferry.ENOTFOUND, "no deployment %s", id)
	}
	return deployKey(ref.App, ref.Group, id), nil
}

// Deployment returns deployment id; ENOTFOUND when there is none.
func (r *Repo) Deployment(ctx context.Context, id string) (Deployment, error) {
	var d Deployment
	key, err := r.DeploymentKey(ctx, id)
	if err != nil {
		return d, err
	}
	found, err := Lookup(ctx, r.st, key, &d)
	if err != nil {
		return d, fmt.Errorf("deployment %s: %w", id, err)
	}
	if !found {
		return d, ferry.Errorf(ferry.ENOTFOUND, "no deployment %s", id)
	}
	return d, nil
}

// CreateDeployment stores a new deployment with its id's index entry, in
// one transaction; an id already taken is an error.
func (r *Repo) CreateDeployment(ctx context.Context, d Deployment) error {
	rb, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	ib, err := json.Marshal(DeploymentRef{App: d.App, Group: d.Group})
	if err != nil {
		return fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	_, ok, err := r.st.CompareAndSwapMany(ctx, []state.Swap{
		{Key: deployKey(d.App, d.Group, d.ID), Value: rb},
		{Key: deployIDKey(d.ID), Value: ib},
	})
	if err != nil {
		return fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	if !ok {
		return fmt.Errorf("deployment %s: the id is taken", d.ID)
	}
	return nil
}

// UpdateDeployment changes deployment id by fn with compare-and-swap;
// fn may return ErrSkip to change nothing. ENOTFOUND when there is no
// such deployment.
func (r *Repo) UpdateDeployment(ctx context.Context, id string, fn func(d *Deployment) error) (Deployment, error) {
	key, err := r.DeploymentKey(ctx, id)
	if err != nil {
		return Deployment{}, err
	}
	d, err := Update(ctx, r.st, key, func(d *Deployment, exists bool) error {
		if !exists {
			return ferry.Errorf(ferry.ENOTFOUND, "no deployment %s", id)
		}
		return fn(d)
	})
	if err != nil && ferry.ErrorCode(err) == ferry.EINTERNAL {
		err = fmt.Errorf("deployment %s: %w", id, err)
	}
	return d, err
}

// Deployments lists the deployments of app in group, oldest first; ""
// for either means any. Only what the names select is read.
func (r *Repo) Deployments(ctx context.Context, app, group string) ([]Deployment, error) {
	prefix := PrefixDeploys
	if app != "" {
		prefix += app + "/"
		if group != "" {
			prefix += group + "/"
		}
	}
	ds, err := ListJSON[Deployment](ctx, r.st, prefix)
	if err != nil {
		return nil, fmt.Errorf("deployments: %w", err)
	}
	if app == "" && group != "" {
		ds = slices.DeleteFunc(ds, func(d Deployment) bool { return d.Group != group })
	}
	slices.SortStableFunc(ds, func(a, b Deployment) int { return a.Started.Compare(b.Started) })
	return ds, nil
}

// AllDeployments lists every deployment, in key order, and the store
// revision the listing reflects, to watch PrefixDeploys from.
func (r *Repo) AllDeployments(ctx context.Context) ([]Deployment, int64, error) {
	kvs, rev, err := r.st.List(ctx, PrefixDeploys)
	if err != nil {
		return nil, 0, fmt.Errorf("deployments: %w", err)
	}
	out := make([]Deployment, 0, len(kvs))
	for _, kv := range kvs {
		var d Deployment
		if err := Unmarshal(kv, &d); err != nil {
			return nil, 0, err
		}
		out = append(out, d)
	}
	return out, rev, nil
}

// DeleteDeployment removes deployment d: its record, then its id's
// index entry (an entry whose record is gone reads as no deployment).
func (r *Repo) DeleteDeployment(ctx context.Context, d Deployment) error {
	if err := r.st.Delete(ctx, deployKey(d.App, d.Group, d.ID)); err != nil {
		return fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	if err := r.st.Delete(ctx, deployIDKey(d.ID)); err != nil {
		return fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	return nil
}

// Wait blocks until key's mod revision passes index, wait passes or ctx
// ends, and returns the key's value (nil when missing) and index: its mod
// revision, at least 1 so that a client echoing it back blocks.
func (r *Repo) Wait(ctx context.Context, key string, index int64, wait time.Duration) ([]byte, int64, error) {
	get := func() ([]byte, int64, int64, error) {
		kvs, rev, err := r.st.List(ctx, key)
		if err != nil {
			return nil, 0, 0, err
		}
		for _, kv := range kvs {
			if kv.Key == key {
				return kv.Value, max(kv.Rev, 1), rev, nil
			}
		}
		return nil, 1, rev, nil
	}
	val, idx, rev, err := get()
	if err != nil || idx > index || wait <= 0 {
		return val, idx, err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	wt, err := r.st.Watch(wctx, key, rev)
	switch {
	case err == nil:
		for ev := range wt.C {
			if ev.KV.Key == key {
				break
			}
		}
	case ctx.Err() == nil && wctx.Err() != nil:
		// The wait was over before the watch began (a wait of 1ns):
		// answer as for a wait that timed out. (FuzzAPI found the 500.)
	default:
		return nil, 0, fmt.Errorf("watch %s: %w", key, err)
	}
	if ctx.Err() != nil {
		return nil, 0, ctx.Err()
	}
	// Changed, timed out, or the watch ended early: the current value is
	// the answer in every case.
	val, idx, _, err = get()
	return val, idx, err
}

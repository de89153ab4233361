package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

func releaseKey(app string, n int) string  { return fmt.Sprintf("%s%s/%08d", PrefixReleases, app, n) }
func groupRelKey(app, group string) string { return PrefixGroupRel + app + "/" + group }

// Release returns release n of app; found is false when there is none.
func (r *Repo) Release(ctx context.Context, app string, n int) (rel api.Release, found bool, err error) {
	found, err = Lookup(ctx, r.st, releaseKey(app, n), &rel)
	if err != nil {
		return rel, false, fmt.Errorf("release %s of %s: %w", ferry.FormatRelease(n), app, err)
	}
	return rel, found, nil
}

// Releases lists app's releases, oldest first; "" lists every app's.
func (r *Repo) Releases(ctx context.Context, app string) ([]api.Release, error) {
	prefix := PrefixReleases
	if app != "" {
		prefix += app + "/"
	}
	rels, err := ListJSON[api.Release](ctx, r.st, prefix)
	if err != nil {
		return nil, fmt.Errorf("releases: %w", err)
	}
	return rels, nil
}

// CreateRelease stores rel only if its number is free; ok is false, with
// no error, when another release took it first.
func (r *Repo) CreateRelease(ctx context.Context, rel api.Release) (ok bool, err error) {
	b, err := json.Marshal(rel)
	if err != nil {
		return false, fmt.Errorf("release %s of %s: %w", ferry.FormatRelease(rel.Number), rel.App, err)
	}
	_, ok, err = r.st.CompareAndSwap(ctx, releaseKey(rel.App, rel.Number), 0, b, 0)
	if err != nil {
		return false, fmt.Errorf("release %s of %s: %w", ferry.FormatRelease(rel.Number), rel.App, err)
	}
	return ok, nil
}

// UpdateRelease changes release n of app by fn (see Update).
func (r *Repo) UpdateRelease(ctx context.Context, app string, n int, fn func(rel *api.Release, exists bool) error) (api.Release, error) {
	return Update(ctx, r.st, releaseKey(app, n), fn)
}

// Artifact is an artifact as the state keeps it: its api record and what
// deploys need from inside it, taken while the upload streamed into the
// store, so neither a publish nor a deploy reads the blob back.
type Artifact struct {
	api.Artifact // OS and Arch among its fields
	// Deploy is nil in the records of servers before this one; the first
	// deploy of such an artifact reads it from the blob and stores it.
	Deploy *DeployPolicy `json:"deploy_policy,omitempty"`
}

// DeployPolicy is what an artifact's ferry.yaml says about deploying it.
type DeployPolicy struct {
	// NoSpec: the artifact has no ferry.yaml, and deploys with the
	// server's defaults.
	NoSpec bool `json:"no_spec,omitempty"`
	// Invalid is why its ferry.yaml did not parse; every deploy of the
	// artifact fails with it, as when the file was read at deploy time.
	Invalid       string        `json:"invalid,omitempty"`
	Strategy      string        `json:"strategy,omitempty"`
	Batch         string        `json:"batch,omitempty"`
	Canary        int           `json:"canary,omitempty"`
	AutoRollback  bool          `json:"auto_rollback"`
	HealthTimeout time.Duration `json:"health_timeout,omitempty"`
}

func artifactKey(sum string) string { return PrefixArtifacts + sum }

// Artifact returns the record of artifact sum; found is false when there
// is none.
func (r *Repo) Artifact(ctx context.Context, sum string) (a Artifact, found bool, err error) {
	found, err = Lookup(ctx, r.st, artifactKey(sum), &a)
	if err != nil {
		return a, false, fmt.Errorf("artifact %s: %w", sum, err)
	}
	return a, found, nil
}

// Artifacts lists every artifact record by digest.
func (r *Repo) Artifacts(ctx context.Context) ([]Artifact, error) {
	arts, err := ListJSON[Artifact](ctx, r.st, PrefixArtifacts)
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	return arts, nil
}

// PutArtifact stores a's record.
func (r *Repo) PutArtifact(ctx context.Context, a Artifact) error {
	if err := PutJSON(ctx, r.st, artifactKey(a.SHA256), a); err != nil {
		return fmt.Errorf("artifact %s: %w", a.SHA256, err)
	}
	return nil
}

// UpdateArtifact changes artifact sum's record by fn (see Update).
func (r *Repo) UpdateArtifact(ctx context.Context, sum string, fn func(a *Artifact, exists bool) error) (Artifact, error) {
	return Update(ctx, r.st, artifactKey(sum), fn)
}

// DeleteArtifact removes artifact sum's record.
func (r *Repo) DeleteArtifact(ctx context.Context, sum string) error {
	if err := r.st.Delete(ctx, artifactKey(sum)); err != nil {
		return fmt.Errorf("artifact %s: %w", sum, err)
	}
	return nil
}

// GroupRelease is the release an app runs in a group: what hosts joining
// the group converge to.
type GroupRelease struct {
	App        string `json:"-"` // from the key
	Group      string `json:"-"`
	Release    int    `json:"release"`
	SHA256     string `json:"sha256"`
	Deployment string `json:"deployment"`
}

// GroupRelease returns what app runs in group; found is false when it
// runs nothing there.
func (r *Repo) GroupRelease(ctx context.Context, app, group string) (g GroupRelease, found bool, err error) {
	found, err = Lookup(ctx, r.st, groupRelKey(app, group), &g)
	if err != nil {
		return g, false, fmt.Errorf("release of %s in %s: %w", app, group, err)
	}
	g.App, g.Group = app, group
	return g, found, nil
}

// GroupReleases lists what every app runs in every group, by app then
// group.
func (r *Repo) GroupReleases(ctx context.Context) ([]GroupRelease, error) {
	kvs, _, err := r.st.List(ctx, PrefixGroupRel)
	if err != nil {
		return nil, fmt.Errorf("group releases: %w", err)
	}
	out := make([]GroupRelease, 0, len(kvs))
	for _, kv := range kvs {
		var g GroupRelease
		if err := Unmarshal(kv, &g); err != nil {
			return nil, err
		}
		g.App, g.Group, _ = strings.Cut(strings.TrimPrefix(kv.Key, PrefixGroupRel), "/")
		out = append(out, g)
	}
	return out, nil
}

// SetGroupRelease records g as what g.App runs in g.Group; release 0
// means nothing.
func (r *Repo) SetGroupRelease(ctx context.Context, g GroupRelease) error {
	key := groupRelKey(g.App, g.Group)
	var err error
	if g.Release == 0 {
		err = r.st.Delete(ctx, key)
	} else {
		err = PutJSON(ctx, r.st, key, g)
	}
	if err != nil {
		return fmt.Errorf("release of %s in %s: %w", g.App, g.Group, err)
	}
	return nil
}

// Package repo is the control server's typed access to its state: hosts,
// their reports and desired states, artifacts, releases, the release each
// group runs, deployments, deploy locks and the audit log, each under its
// own keys of a state.Store, with the indexes that let a request read what
// it needs instead of listing everything (hosts by group, deployments by
// app × group, reports by host).
//
// The store is the truth; every method reads or changes it, nothing is
// cached here. Records other packages keep alone (tokens, config) use the
// generic helpers (GetJSON, Update, ListJSON) on Store().
package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
)

// The key layout. Every prefix ends in "/" so that listing one name never
// returns another that starts with it; names never hold a "/".
const (
	KeyInit         = "meta/init"
	KeyLayout       = "meta/layout"  // the layout version Upgrade brought the state to
	PrefixTokens    = "tokens/"      // tokens/<id> → the server's token record
	PrefixHosts     = "hosts/"       // hosts/<name> → Host
	PrefixGroupIdx  = "groupidx/"    // groupidx/<group>/<host> → "" (hosts by group)
	PrefixReports   = "reports/"     // reports/<host> → Report
	PrefixDesired   = "desired/"     // desired/<host> → Desired
	PrefixArtifacts = "artifacts/"   // artifacts/<sha256> → Artifact
	PrefixReleases  = "releases/"    // releases/<app>/<%08d> → api.Release
	PrefixGroupRel  = "grouprel/"    // grouprel/<app>/<group> → GroupRelease
	PrefixDeploys   = "deploys/"     // deploys/<app>/<group>/<id> → Deployment
	PrefixDeployIDs = "deployid/"    // deployid/<id> → DeploymentRef
	PrefixLocks     = "locks/"       // locks/<app>/<group> → Lock, on a lease
	PrefixAudit     = "audit/"       // audit/<%019d unix nanos>-<rand> → api.AuditEvent
	prefixOldDeploy = "deployments/" // deployments/<id> → Deployment: the layout before version 2
)

// Repo is typed access to one state store.
type Repo struct {
	st state.Store
}

// New returns the repository of st.
func New(st state.Store) *Repo { return &Repo{st: st} }

// Store is the store under the repository, for watches and for the
// records that have no typed access here.
func (r *Repo) Store() state.Store { return r.st }

// GetJSON reads key into v and returns its mod revision; a missing key is
// ENOTFOUND.
func GetJSON(ctx context.Context, st state.Store, key string, v any) (int64, error) {
	kv, err := st.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return 0, fmt.Errorf("state: %s: %w", key, err)
	}
	return kv.Rev, nil
}

// Lookup is GetJSON that says whether key exists instead of failing.
func Lookup(ctx context.Context, st state.Store, key string, v any) (bool, error) {
	_, err := GetJSON(ctx, st, key, v)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return false, nil
	}
	return err == nil, err
}

// PutJSON stores v at key.
func PutJSON(ctx context.Context, st state.Store, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state: %s: %w", key, err)
	}
	_, err = st.Put(ctx, key, b, 0)
	return err
}

// Unmarshal decodes kv's value into v.
func Unmarshal(kv state.KV, v any) error {
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return fmt.Errorf("state: %s: %w", kv.Key, err)
	}
	return nil
}

// ListJSON decodes every value under prefix, in key order.
func ListJSON[T any](ctx context.Context, st state.Store, prefix string) ([]T, error) {
	kvs, _, err := st.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		if err := Unmarshal(kv, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// ErrSkip, returned by an Update function, changes nothing.
var ErrSkip = errors.New("skip")

// Update changes key by fn with compare-and-swap, retrying when someone
// else changed it meanwhile. fn gets the zero T and false when key does
// not exist; it may return ErrSkip to leave the key alone (Update then
// returns nil and the value fn saw).
func Update[T any](ctx context.Context, st state.Store, key string, fn func(v *T, exists bool) error) (T, error) {
	for {
		var v T
		var rev int64
		kv, err := st.Get(ctx, key)
		switch {
		case err == nil:
			if err := Unmarshal(kv, &v); err != nil {
				return v, err
			}
			rev = kv.Rev
		case ferry.ErrorCode(err) != ferry.ENOTFOUND:
			return v, err
		}
		if err := fn(&v, rev != 0); err != nil {
			if errors.Is(err, ErrSkip) {
				err = nil
			}
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, fmt.Errorf("state: %s: %w", key, err)
		}
		_, ok, err := st.CompareAndSwap(ctx, key, rev, b, 0)
		if err != nil || ok {
			return v, err
		}
	}
}

// revs reads the mod revision of each key (0: missing), for a
// CompareAndSwapMany that sets them whatever they hold.
func (r *Repo) revs(ctx context.Context, keys []string) ([]int64, error) {
	out := make([]int64, len(keys))
	for i, k := range keys {
		kv, err := r.st.Get(ctx, k)
		switch {
		case err == nil:
			out[i] = kv.Rev
		case ferry.ErrorCode(err) != ferry.ENOTFOUND:
			return nil, err
		}
	}
	return out, nil
}

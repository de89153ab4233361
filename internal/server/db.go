package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
)

// The state store's key layout. Every prefix ends in "/" so that listing
// one name never returns another that starts with it.
const (
	keyInit       = "meta/init"
	prefixTokens  = "tokens/"      // tokens/<id> → tokenRecord (API, join and agent tokens)
	prefixHosts   = "hosts/"       // hosts/<name> → hostRecord
	prefixReports = "reports/"     // reports/<host> → reportRecord
	prefixDesired = "desired/"     // desired/<host> → hostDesired
	prefixArts    = "artifacts/"   // artifacts/<sha256> → api.Artifact
	prefixRels    = "releases/"    // releases/<app>/<%08d> → api.Release
	prefixGroup   = "grouprel/"    // grouprel/<app>/<group> → groupRelease
	prefixDeploys = "deployments/" // deployments/<id> → deployRecord
	prefixLocks   = "locks/"       // locks/<app>/<group> → lockRecord, on a lease
	prefixAudit   = "audit/"       // audit/<unix nanos>-<rand> → api.AuditEvent
)

func releaseKey(app string, n int) string { return fmt.Sprintf("%s%s/%08d", prefixRels, app, n) }
func groupKey(app, group string) string   { return prefixGroup + app + "/" + group }
func lockKey(app, group string) string    { return prefixLocks + app + "/" + group }

// getJSON reads key into v and returns its mod revision; a missing key is
// ENOTFOUND.
func (s *Server) getJSON(ctx context.Context, key string, v any) (int64, error) {
	kv, err := s.st.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return 0, fmt.Errorf("state: %s: %w", key, err)
	}
	return kv.Rev, nil
}

// lookup is getJSON that says whether key exists instead of failing.
func (s *Server) lookup(ctx context.Context, key string, v any) (bool, error) {
	_, err := s.getJSON(ctx, key, v)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return false, nil
	}
	return err == nil, err
}

func (s *Server) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = s.st.Put(ctx, key, b, 0)
	return err
}

func unmarshal(kv state.KV, v any) error {
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return fmt.Errorf("state: %s: %w", kv.Key, err)
	}
	return nil
}

// listJSON decodes every value under prefix, in key order.
func listJSON[T any](ctx context.Context, st state.Store, prefix string) ([]T, error) {
	kvs, _, err := st.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("state: %s: %w", kv.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// update changes key by fn with compare-and-swap, retrying when someone
// else changed it meanwhile. fn gets the zero T and false when key does not
// exist; it may return errSkip to leave the key alone.
func update[T any](ctx context.Context, st state.Store, key string, fn func(v *T, exists bool) error) (T, error) {
	for {
		var v T
		var rev int64
		kv, err := st.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(kv.Value, &v); err != nil {
				return v, fmt.Errorf("state: %s: %w", key, err)
			}
			rev = kv.Rev
		case ferry.ErrorCode(err) != ferry.ENOTFOUND:
			return v, err
		}
		if err := fn(&v, rev != 0); err != nil {
			if err == errSkip {
				err = nil
			}
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, err
		}
		_, ok, err := st.CompareAndSwap(ctx, key, rev, b, 0)
		if err != nil || ok {
			return v, err
		}
	}
}

// errSkip tells update to change nothing.
var errSkip = fmt.Errorf("skip")

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
)

// Layout is the version of the key layout this package reads and writes.
// Version 1 (servers before the repository) kept deployments at
// deployments/<id> and had no group index.
const Layout = 2

// Upgrade brings a state written by an older server to Layout: it writes
// the group index of every host and moves every deployment under its
// app × group. It is idempotent, so servers that share a state may all
// run it; each step is a compare-and-swap, so none doubles a record.
// A server of an older version must not run on the state meanwhile.
func (r *Repo) Upgrade(ctx context.Context) error {
	kv, err := r.st.Get(ctx, KeyLayout)
	switch {
	case err == nil:
		if v, _ := strconv.Atoi(string(kv.Value)); v >= Layout {
			return nil
		}
	case ferry.ErrorCode(err) != ferry.ENOTFOUND:
		return fmt.Errorf("upgrade state: %w", err)
	}
	hosts, err := r.Hosts(ctx)
	if err != nil {
		return fmt.Errorf("upgrade state: %w", err)
	}
	for _, h := range hosts {
		for _, g := range h.Groups {
			if _, _, err := r.st.CompareAndSwap(ctx, groupIdxKey(g, h.Name), 0, []byte{}, 0); err != nil {
				return fmt.Errorf("upgrade state: host %s: %w", h.Name, err)
			}
		}
	}
	old, _, err := r.st.List(ctx, prefixOldDeploy)
	if err != nil {
		return fmt.Errorf("upgrade state: %w", err)
	}
	for _, kv := range old {
		var d Deployment
		if err := Unmarshal(kv, &d); err != nil {
			return fmt.Errorf("upgrade state: %w", err)
		}
		ib, _ := json.Marshal(DeploymentRef{App: d.App, Group: d.Group})
		// The moved record and its index entry in one transaction, then
		// the old key: a crash between them leaves a copy the next
		// Upgrade removes. A compare that fails means another server
		// moved it first.
		_, _, err := r.st.CompareAndSwapMany(ctx, []state.Swap{
			{Key: deployKey(d.App, d.Group, d.ID), Value: kv.Value},
			{Key: deployIDKey(d.ID), Value: ib},
		})
		if err != nil {
			return fmt.Errorf("upgrade state: deployment %s: %w", d.ID, err)
		}
		if _, err := r.st.CompareAndDelete(ctx, kv.Key, kv.Rev); err != nil {
			return fmt.Errorf("upgrade state: deployment %s: %w", d.ID, err)
		}
	}
	if _, err := r.st.Put(ctx, KeyLayout, []byte(strconv.Itoa(Layout)), 0); err != nil {
		return fmt.Errorf("upgrade state: %w", err)
	}
	return nil
}

package repo

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/state"
)

// Lock is the deploy lock of an app × group: on a lease its rollout
// renews, so a dead server's lock expires by itself.
type Lock struct {
	api.Lock
	Deployment string `json:"deployment"`
}

func lockKey(app, group string) string { return PrefixLocks + app + "/" + group }

// Lock returns the lock of app × group and its lease; found is false when
// nobody holds it.
func (r *Repo) Lock(ctx context.Context, app, group string) (l Lock, lease state.LeaseID, found bool, err error) {
	kv, err := r.st.Get(ctx, lockKey(app, group))
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return l, 0, false, nil
	}
	if err != nil {
		return l, 0, false, fmt.Errorf("lock of %s on %s: %w", app, group, err)
	}
	if err := Unmarshal(kv, &l); err != nil {
		return l, 0, false, err
	}
	return l, kv.Lease, true, nil
}

// CreateLock stores l on lease only if nobody holds the lock; ok is false,
// with no error, when someone does.
func (r *Repo) CreateLock(ctx context.Context, l Lock, lease state.LeaseID) (ok bool, err error) {
	b, err := json.Marshal(l)
	if err != nil {
		return false, fmt.Errorf("lock of %s on %s: %w", l.App, l.Group, err)
	}
	_, ok, err = r.st.CompareAndSwap(ctx, lockKey(l.App, l.Group), 0, b, lease)
	if err != nil {
		return false, fmt.Errorf("lock of %s on %s: %w", l.App, l.Group, err)
	}
	return ok, nil
}

// DeleteLock removes the lock of app × group.
func (r *Repo) DeleteLock(ctx context.Context, app, group string) error {
	if err := r.st.Delete(ctx, lockKey(app, group)); err != nil {
		return fmt.Errorf("lock of %s on %s: %w", app, group, err)
	}
	return nil
}

// Locks lists the locks held, by app then group.
func (r *Repo) Locks(ctx context.Context) ([]Lock, error) {
	ls, err := ListJSON[Lock](ctx, r.st, PrefixLocks)
	if err != nil {
		return nil, fmt.Errorf("locks: %w", err)
	}
	return ls, nil
}

package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
)

// lockTTL is how long a lock outlives the server that stopped renewing it.
const lockTTL = 15 * time.Second

// lock is a held deploy lock.
type lock struct {
	app, group string
	lease      state.LeaseID
}

// errLockLost ends a rollout whose lock was broken or expired.
var errLockLost = errors.New("the deploy lock was broken or expired")

// LockedError is the ELOCKED error that names l's holder.
func LockedError(l repo.Lock) error {
	return ferry.Errorf(ferry.ELOCKED, "%s", lockMessage(l))
}

func lockMessage(l repo.Lock) string {
	return fmt.Sprintf("%s on %s is locked by %s since %s for %s (deployment %s)",
		l.App, l.Group, l.Owner, l.Since.Format(time.RFC3339), l.Reason, l.Deployment)
}

// LockHeld returns the holder of app × group's lock, if someone holds it.
func (o *Orchestrator) LockHeld(ctx context.Context, app, group string) (repo.Lock, bool, error) {
	held, _, ok, err := o.repo.Lock(ctx, app, group)
	return held, ok, err
}

// acquireLock takes the lock of rec's app × group, waiting up to wait for
// the holder to let go; after that it fails with ELOCKED naming the holder.
func (o *Orchestrator) acquireLock(ctx context.Context, rec repo.Lock, wait time.Duration) (*lock, error) {
	deadline := time.Now().Add(wait)
	for {
		l, held, err := o.tryLock(ctx, rec)
		if err != nil || l != nil {
			return l, err
		}
		if !time.Now().Before(deadline) {
			return nil, LockedError(held)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(200*time.Millisecond, time.Until(deadline))):
		}
	}
}

// tryLock takes the lock if it is free, or returns its holder. A lock
// already held for rec's deployment (by a server that stopped) is taken
// over.
func (o *Orchestrator) tryLock(ctx context.Context, rec repo.Lock) (*lock, repo.Lock, error) {
	held, lease, found, err := o.repo.Lock(ctx, rec.App, rec.Group)
	if err != nil {
		return nil, held, err
	}
	if found {
		if held.Deployment != rec.Deployment {
			return nil, held, nil
		}
		if err := o.st.KeepAlive(ctx, lease); err == nil {
			return &lock{app: rec.App, group: rec.Group, lease: lease}, held, nil
		}
		return nil, held, nil // expiring: the next try takes it
	}
	lease, err = o.st.Grant(ctx, lockTTL)
	if err != nil {
		return nil, held, err
	}
	ok, err := o.repo.CreateLock(ctx, rec, lease)
	if err != nil || !ok {
		o.st.Revoke(context.WithoutCancel(ctx), lease)
		return nil, held, err
	}
	return &lock{app: rec.App, group: rec.Group, lease: lease}, held, nil
}

// keep renews l until ctx ends, and calls lost when the lock is gone
// (broken by an admin, or expired while renewals failed).
func (o *Orchestrator) keep(ctx context.Context, l *lock, lost func()) {
	t := time.NewTicker(lockTTL / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := o.st.KeepAlive(ctx, l.lease)
		if err == nil {
			_, lease, found, lerr := o.repo.Lock(ctx, l.app, l.group)
			switch {
			case lerr != nil:
				err = lerr
			case !found:
				err = ferry.Errorf(ferry.ENOTFOUND, "lock of %s on %s is gone", l.app, l.group)
			case lease != l.lease:
				err = ferry.Errorf(ferry.ENOTFOUND, "lock of %s on %s taken by another lease", l.app, l.group)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if ferry.ErrorCode(err) == ferry.ENOTFOUND {
			lost()
			return
		}
		if err != nil {
			o.log.Warn("renew lock", logApp, l.app, logGroup, l.group, logErr, err)
		}
	}
}

// release lets go of l.
func (o *Orchestrator) release(ctx context.Context, l *lock) {
	if err := o.st.Revoke(context.WithoutCancel(ctx), l.lease); err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
		o.log.Warn("release lock", logApp, l.app, logGroup, l.group, logErr, err)
	}
}

// Locks lists the locks held, by app then group.
func (o *Orchestrator) Locks(ctx context.Context) ([]repo.Lock, error) {
	return o.repo.Locks(ctx)
}

// BreakLock removes the lock of app × group and returns what it was; its
// rollout notices at its next renewal and stops, failed. ENOTFOUND when
// nobody holds it.
func (o *Orchestrator) BreakLock(ctx context.Context, app, group string) (repo.Lock, error) {
	held, lease, found, err := o.repo.Lock(ctx, app, group)
	if err != nil {
		return held, err
	}
	if !found {
		return held, ferry.Errorf(ferry.ENOTFOUND, "%s on %s is not locked", app, group)
	}
	if err := o.st.Revoke(ctx, lease); err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
		return held, err
	}
	if err := o.repo.DeleteLock(ctx, app, group); err != nil {
		return held, err
	}
	return held, nil
}

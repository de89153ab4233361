package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/state"
)

// lockTTL is how long a lock outlives the server that stopped renewing it.
const lockTTL = 15 * time.Second

// lockRecord is the deploy lock of an app × group: on a lease the
// rollout renews, so a dead server's lock expires by itself.
type lockRecord struct {
	api.Lock
	Deployment string `json:"deployment"`
}

// lock is a held deploy lock.
type lock struct {
	key   string
	lease state.LeaseID
}

// errLockLost ends a rollout whose lock was broken or expired.
var errLockLost = errors.New("the deploy lock was broken or expired")

func (l lockRecord) message() string {
	return fmt.Sprintf("%s on %s is locked by %s since %s for %s (deployment %s)",
		l.App, l.Group, l.Owner, l.Since.Format(time.RFC3339), l.Reason, l.Deployment)
}

// lockHeld returns the holder of app × group's lock, if someone holds it.
func (s *Server) lockHeld(ctx context.Context, app, group string) (lockRecord, bool, error) {
	var held lockRecord
	kv, err := s.st.Get(ctx, lockKey(app, group))
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return held, false, nil
	}
	if err != nil {
		return held, false, err
	}
	if err := json.Unmarshal(kv.Value, &held); err != nil {
		return held, false, fmt.Errorf("state: %s: %w", kv.Key, err)
	}
	return held, true, nil
}

// acquireLock takes the lock of rec's app × group, waiting up to wait for
// the holder to let go; after that it fails with ELOCKED naming the holder.
func (s *Server) acquireLock(ctx context.Context, rec lockRecord, wait time.Duration) (*lock, error) {
	key := lockKey(rec.App, rec.Group)
	deadline := time.Now().Add(wait)
	for {
		l, held, err := s.tryLock(ctx, key, rec)
		if err != nil || l != nil {
			return l, err
		}
		if !time.Now().Before(deadline) {
			return nil, ferry.Errorf(ferry.ELOCKED, "%s", held.message())
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
func (s *Server) tryLock(ctx context.Context, key string, rec lockRecord) (*lock, lockRecord, error) {
	var held lockRecord
	kv, err := s.st.Get(ctx, key)
	switch {
	case err == nil:
		if err := json.Unmarshal(kv.Value, &held); err != nil {
			return nil, held, fmt.Errorf("state: %s: %w", key, err)
		}
		if held.Deployment != rec.Deployment {
			return nil, held, nil
		}
		if err := s.st.KeepAlive(ctx, kv.Lease); err == nil {
			return &lock{key: key, lease: kv.Lease}, held, nil
		}
		return nil, held, nil // expiring: the next try takes it
	case ferry.ErrorCode(err) != ferry.ENOTFOUND:
		return nil, held, err
	}
	lease, err := s.st.Grant(ctx, lockTTL)
	if err != nil {
		return nil, held, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, held, err
	}
	_, ok, err := s.st.CompareAndSwap(ctx, key, 0, b, lease)
	if err != nil || !ok {
		s.st.Revoke(context.WithoutCancel(ctx), lease)
		return nil, held, err
	}
	return &lock{key: key, lease: lease}, held, nil
}

// keep renews l until ctx ends, and calls lost when the lock is gone
// (broken by an admin, or expired while renewals failed).
func (s *Server) keep(ctx context.Context, l *lock, lost func()) {
	t := time.NewTicker(lockTTL / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.st.KeepAlive(ctx, l.lease)
		if err == nil {
			var kv state.KV
			if kv, err = s.st.Get(ctx, l.key); err == nil && kv.Lease != l.lease {
				err = ferry.Errorf(ferry.ENOTFOUND, "lock %s taken by another lease", l.key)
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
			s.log.Warn("renew lock", "lock", l.key, logErr, err)
		}
	}
}

// release lets go of l.
func (s *Server) release(ctx context.Context, l *lock) {
	if err := s.st.Revoke(context.WithoutCancel(ctx), l.lease); err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
		s.log.Warn("release lock", "lock", l.key, logErr, err)
	}
}

func (s *Server) listLocks(w http.ResponseWriter, r *http.Request, p *principal) error {
	recs, err := listJSON[lockRecord](r.Context(), s.st, prefixLocks)
	if err != nil {
		return err
	}
	out := make([]api.Lock, 0, len(recs))
	for _, rec := range recs {
		if p.allowed(rec.App, rec.Group) {
			out = append(out, rec.Lock)
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// breakLock removes a lock; its rollout notices at its next renewal and
// stops, failed.
func (s *Server) breakLock(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	if err := p.scope(r.PathValue("app"), r.PathValue("group")); err != nil {
		return err
	}
	key := lockKey(r.PathValue("app"), r.PathValue("group"))
	kv, err := s.st.Get(ctx, key)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return ferry.Errorf(ferry.ENOTFOUND, "%s on %s is not locked", r.PathValue("app"), r.PathValue("group"))
	}
	if err != nil {
		return err
	}
	if err := s.st.Revoke(ctx, kv.Lease); err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
		return err
	}
	if err := s.st.Delete(ctx, key); err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "lock.break", Target: key, Detail: string(kv.Value), App: r.PathValue("app"), Group: r.PathValue("group")})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

package bolt

import (
	"context"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/state"
)

// maxExpiryWait bounds the expiry loop's sleep, so that a wall clock that
// jumps forward is noticed.
const maxExpiryWait = time.Second

// Grant creates a lease that expires ttl after its last KeepAlive. Lease IDs
// count up from 1 and are never reused.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (state.LeaseID, error) {
	if ttl <= 0 {
		return 0, ferry.Errorf(ferry.EINVALID, "lease ttl %s: want more than 0", ttl)
	}
	var id state.LeaseID
	_, err := s.update(ctx, func(t *txn) error {
		id = state.LeaseID(getInt(t.tx, metaLease) + 1)
		if err := putInt(t.tx, metaLease, int64(id)); err != nil {
			return err
		}
		t.dirty = true
		l := lease{ttl: ttl, deadline: time.Now().Add(ttl)}
		return t.tx.Bucket(bucketLeases).Put(u64(int64(id)), encodeLease(l))
	})
	if err != nil {
		return 0, err
	}
	// The new lease may expire before the one the loop sleeps for.
	select {
	case s.nudge <- struct{}{}:
	default:
	}
	return id, nil
}

// KeepAlive renews lease id for its ttl from now.
func (s *Store) KeepAlive(ctx context.Context, id state.LeaseID) error {
	_, err := s.update(ctx, func(t *txn) error {
		now := time.Now()
		l, err := t.liveLease(id, now)
		if err != nil {
			return err
		}
		t.dirty = true
		l.deadline = now.Add(l.ttl)
		return t.tx.Bucket(bucketLeases).Put(u64(int64(id)), encodeLease(l))
	})
	return err
}

// Revoke ends lease id now, deleting its keys. An unknown lease returns an
// ENOTFOUND error; one that expired but is not collected yet is revoked.
func (s *Store) Revoke(ctx context.Context, id state.LeaseID) error {
	_, err := s.update(ctx, func(t *txn) error {
		if t.tx.Bucket(bucketLeases).Get(u64(int64(id))) == nil {
			return ferry.Errorf(ferry.ENOTFOUND, "lease %d not found", id)
		}
		return t.revoke(id)
	})
	return err
}

// expireLoop revokes leases whose deadline passed, sleeping until the next
// deadline, a Grant, or Close.
func (s *Store) expireLoop() {
	defer s.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-s.nudge:
		case <-timer.C:
		}
		wait, err := s.expire()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			s.log.Error("state/bolt: expiring leases", logKeyPath, s.path, logKeyErr, err)
		}
		timer.Reset(wait)
	}
}

// expire revokes every lease past its deadline in one transaction and
// returns how long until the next deadline.
func (s *Store) expire() (time.Duration, error) {
	wait := maxExpiryWait
	_, err := s.update(context.Background(), func(t *txn) error {
		now := time.Now()
		var due []state.LeaseID
		err := t.tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
			l := decodeLease(v)
			if d := l.deadline.Sub(now); d <= 0 {
				due = append(due, state.LeaseID(i64(k)))
			} else if d < wait {
				wait = d
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range due {
			if err := t.revoke(id); err != nil {
				return err
			}
		}
		return nil
	})
	return wait, err
}

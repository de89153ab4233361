package bolt

import (
	"context"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
	"go.etcd.io/bbolt"
)

// maxExpiryWait bounds the expiry loop's sleep, so that a wall clock that
// jumps forward is noticed and renewals reach the file within a second.
const maxExpiryWait = time.Second

// Leases live in memory, as etcd keeps them: KeepAlive moves a deadline in
// memory and takes no write transaction, so a renewal never queues behind
// other writers' fsyncs — a busy store must not let the lease of a live
// holder expire. The expiry loop writes changed deadlines to the file at
// least every maxExpiryWait, so that after a restart a lease whose time
// passed while the store was closed is expired.
type memLease struct {
	ttl       time.Duration
	deadline  time.Time // the live one
	persisted time.Time // the one in the file
}

// loadLeases fills the table from the file, at Open.
func (s *Store) loadLeases(tx *bbolt.Tx) error {
	return tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
		l := decodeLease(v)
		s.leases[state.LeaseID(i64(k))] = &memLease{ttl: l.ttl, deadline: l.deadline, persisted: l.deadline}
		return nil
	})
}

// liveLease reports whether lease id exists and its time has not passed; an
// expired lease the expiry loop has not collected yet counts as gone.
func (s *Store) liveLease(id state.LeaseID, now time.Time) error {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	_, err := s.liveLocked(id, now)
	return err
}

// liveLocked is liveLease for a caller holding lmu; it returns the lease.
func (s *Store) liveLocked(id state.LeaseID, now time.Time) (*memLease, error) {
	l, ok := s.leases[id]
	if !ok {
		return nil, ferry.Errorf(ferry.ENOTFOUND, "lease %d not found", id)
	}
	if !now.Before(l.deadline) {
		return nil, ferry.Errorf(ferry.ENOTFOUND, "lease %d expired", id)
	}
	return l, nil
}

// Grant creates a lease that expires ttl after its last KeepAlive. Lease IDs
// count up from 1 and are never reused.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (state.LeaseID, error) {
	if ttl <= 0 {
		return 0, ferry.Errorf(ferry.EINVALID, "lease ttl %s: want more than 0", ttl)
	}
	var id state.LeaseID
	var l lease
	_, err := s.update(ctx, func(t *txn) error {
		id = state.LeaseID(getInt(t.tx, metaLease) + 1)
		if err := putInt(t.tx, metaLease, int64(id)); err != nil {
			return err
		}
		t.dirty = true
		l = lease{ttl: ttl, deadline: time.Now().Add(ttl)}
		return t.tx.Bucket(bucketLeases).Put(u64(int64(id)), encodeLease(l))
	})
	if err != nil {
		return 0, err
	}
	s.lmu.Lock()
	s.leases[id] = &memLease{ttl: ttl, deadline: l.deadline, persisted: l.deadline}
	s.lmu.Unlock()
	// The new lease may expire before the one the loop sleeps for.
	select {
	case s.nudge <- struct{}{}:
	default:
	}
	return id, nil
}

// KeepAlive renews lease id for its ttl from now, in memory.
func (s *Store) KeepAlive(ctx context.Context, id state.LeaseID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Not s.mu, which writers hold through their fsync: a renewal must not
	// queue behind them.
	select {
	case <-s.done:
		return errClosed
	default:
	}
	now := time.Now()
	s.lmu.Lock()
	defer s.lmu.Unlock()
	l, err := s.liveLocked(id, now)
	if err != nil {
		return err
	}
	l.deadline = now.Add(l.ttl)
	return nil
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
	if err == nil {
		s.lmu.Lock()
		delete(s.leases, id)
		s.lmu.Unlock()
	}
	return err
}

// expireLoop revokes leases whose deadline passed and writes renewed
// deadlines to the file, sleeping until the next deadline, a Grant, or
// Close, and at most maxExpiryWait.
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

// expire revokes every lease past its deadline and stores the renewed
// deadlines, in one transaction, and returns how long until the next
// deadline.
func (s *Store) expire() (time.Duration, error) {
	wait := maxExpiryWait
	now := time.Now()
	var due []state.LeaseID
	renewed := map[state.LeaseID]lease{}
	s.lmu.Lock()
	for id, l := range s.leases {
		if d := l.deadline.Sub(now); d <= 0 {
			due = append(due, id)
		} else {
			wait = min(wait, d)
			if !l.deadline.Equal(l.persisted) {
				renewed[id] = lease{ttl: l.ttl, deadline: l.deadline}
			}
		}
	}
	s.lmu.Unlock()
	if len(due) == 0 && len(renewed) == 0 {
		return wait, nil
	}
	_, err := s.update(context.Background(), func(t *txn) error {
		b := t.tx.Bucket(bucketLeases)
		for id, l := range renewed {
			if b.Get(u64(int64(id))) == nil {
				continue // revoked meanwhile
			}
			t.dirty = true
			if err := b.Put(u64(int64(id)), encodeLease(l)); err != nil {
				return err
			}
		}
		for _, id := range due {
			if b.Get(u64(int64(id))) == nil {
				continue
			}
			if err := t.revoke(id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wait, err // the table is unchanged: the next round tries again
	}
	s.lmu.Lock()
	for id, l := range renewed {
		if m := s.leases[id]; m != nil {
			m.persisted = l.deadline
		}
	}
	for _, id := range due {
		// A lease past its deadline cannot be renewed, so it is still due.
		delete(s.leases, id)
	}
	s.lmu.Unlock()
	return wait, nil
}

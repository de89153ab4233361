package etcd

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// Election elects one of the processes that campaign under the same name,
// through an etcd session: a leader that dies loses its session's lease
// after SessionTTL, and the next campaigner takes over.
type Election struct {
	s    *Store
	name string
	id   string
	ttl  time.Duration
}

// SessionTTL is how long a dead leader keeps leading.
const SessionTTL = 3 * time.Second

// Election returns the election called name; id names this campaigner
// (host and pid, say) in etcd, for whoever inspects it.
func (s *Store) Election(name, id string) *Election {
	return &Election{s: s, name: name, id: id, ttl: SessionTTL}
}

// Lead blocks until this process leads or ctx ends, and returns a context
// that ends when it stops leading: its session expired (etcd unreachable
// for SessionTTL) or ctx ended, when it resigns.
func (e *Election) Lead(ctx context.Context) (context.Context, error) {
	sess, err := concurrency.NewSession(e.s.c, concurrency.WithTTL(int(e.ttl.Seconds())), concurrency.WithContext(ctx))
	if err != nil {
		return nil, wrap(ctx, err)
	}
	el := concurrency.NewElection(sess, e.s.prefix+"election/"+e.name)
	if err := el.Campaign(ctx, e.id); err != nil {
		sess.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("state/etcd: campaign %s: %w", e.name, wrap(ctx, err))
	}
	lctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-lctx.Done():
		}
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		el.Resign(rctx)
		rcancel()
		sess.Close()
	}()
	return lctx, nil
}

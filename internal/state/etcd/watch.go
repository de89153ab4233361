package etcd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry/internal/state"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// slowReader is how long a watcher's full channel may stay full.
const slowReader = 2 * time.Second

var errWatchClosed = errors.New("state/etcd: watch ended: the client closed or the cluster lost its leader; list and watch again")

// Watch sends every change under prefix after revision from (0: after
// now). The etcd client resumes a broken stream from the last revision it
// delivered, so reconnects neither lose nor repeat events. The watch
// requires a leader: on a member cut off from the rest it ends (Err says
// so) instead of going quiet.
func (s *Store) Watch(ctx context.Context, prefix string, from int64) (*state.Watcher, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if from <= 0 {
		// "Now" is the revision read here, not whenever etcd gets the
		// watch request: a change made after Watch returns is never missed.
		rev, err := s.Rev(ctx)
		if err != nil {
			return nil, err
		}
		from = rev
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.c.Watch(wctx, s.key(prefix), clientv3.WithPrefix(), clientv3.WithRev(from+1))
	out := make(chan state.Event, s.opt.WatchBuffer)
	var (
		mu   sync.Mutex
		werr error
	)
	end := func(err error) {
		mu.Lock()
		werr = err
		mu.Unlock()
	}
	go func() {
		defer close(out)
		defer cancel()
		for resp := range wch {
			if resp.CompactRevision != 0 {
				end(state.ErrCompacted)
				return
			}
			if err := resp.Err(); err != nil {
				if ctx.Err() == nil {
					end(wrap(ctx, err))
				}
				return
			}
			for _, ev := range resp.Events {
				select {
				case out <- s.event(ev):
					continue
				default:
				}
				// etcd delivers events in bursts; a reader gets a while
				// to catch up before it counts as too slow (the client
				// would otherwise buffer for it without bound).
				t := time.NewTimer(slowReader)
				select {
				case out <- s.event(ev):
					t.Stop()
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
					end(state.ErrCompacted) // list and watch again
					return
				}
			}
		}
		if ctx.Err() == nil {
			end(errWatchClosed)
		}
	}()
	return state.NewWatcher(out, func() error {
		mu.Lock()
		defer mu.Unlock()
		return werr
	}), nil
}

func (s *Store) event(ev *clientv3.Event) state.Event {
	kv := state.KV{
		Key:   strings.TrimPrefix(string(ev.Kv.Key), s.prefix),
		Rev:   ev.Kv.ModRevision,
		Lease: state.LeaseID(ev.Kv.Lease),
	}
	if ev.Type == mvccpb.DELETE {
		return state.Event{Type: state.Delete, KV: kv}
	}
	kv.Value = ev.Kv.Value
	return state.Event{Type: state.Put, KV: kv}
}

package bolt

import (
	"bytes"
	"context"
	"strings"
	"sync"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
	"go.etcd.io/bbolt"
)

// watcher is one Watch. Its channel is sent to and closed only with
// Store.mu held, so a send never meets a closed channel.
type watcher struct {
	prefix string
	from   int64 // only events after this revision
	c      chan state.Event
	done   chan struct{} // closed with c; stops the ctx goroutine

	mu  sync.Mutex
	err error
}

func (w *watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Watch sends the changes to keys with prefix after revision from (0: after
// now). Changes still in the log are replayed first: the channel's buffer
// holds all of them plus Options.WatchBuffer live events, so a watch from
// the past never starts out behind.
func (s *Store) Watch(ctx context.Context, prefix string, from int64) (*state.Watcher, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if from < 0 {
		return nil, ferry.Errorf(ferry.EINVALID, "watch from revision %d", from)
	}
	// Holding mu keeps writers out between reading the log and joining the
	// watchers, so no change falls in between or arrives twice.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	var history []state.Event
	compacted := false
	err := s.db.View(func(tx *bbolt.Tx) error {
		rev := getInt(tx, metaRev)
		if from == 0 {
			from = rev
			return nil
		}
		if from < getInt(tx, metaCompact) {
			compacted = true
			return nil
		}
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(u64(from + 1)); k != nil; k, v = c.Next() {
			ev, err := decodeEvent(k, v)
			if err != nil {
				return err
			}
			if strings.HasPrefix(ev.KV.Key, prefix) {
				history = append(history, ev)
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	w := &watcher{
		prefix: prefix,
		from:   from,
		c:      make(chan state.Event, len(history)+s.opt.WatchBuffer),
		done:   make(chan struct{}),
	}
	if compacted {
		w.err = state.ErrCompacted
		close(w.c)
		return state.NewWatcher(w.c, w.Err), nil
	}
	for _, ev := range history {
		w.c <- ev
	}
	s.watchers[w] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			if _, ok := s.watchers[w]; ok {
				s.endWatch(w, nil)
			}
			s.mu.Unlock()
		case <-w.done:
		}
	}()
	return state.NewWatcher(w.c, w.Err), nil
}

// deliver hands committed events to the watchers, in order, never blocking:
// a watcher with a full buffer is ended with state.ErrCompacted. s.mu held.
func (s *Store) deliver(events []state.Event) {
	if len(events) == 0 {
		return
	}
	for w := range s.watchers {
		if !w.send(events) {
			s.endWatch(w, state.ErrCompacted)
		}
	}
}

// send queues the events w wants and reports false if its buffer is full.
func (w *watcher) send(events []state.Event) bool {
	for _, ev := range events {
		if ev.KV.Rev <= w.from || !strings.HasPrefix(ev.KV.Key, w.prefix) {
			continue
		}
		// Each watcher gets its own copy of the value: a consumer may
		// change what it was given.
		ev.KV.Value = bytes.Clone(ev.KV.Value)
		select {
		case w.c <- ev:
		default:
			return false
		}
	}
	return true
}

// endWatch closes w's channel with err (nil: its ctx ended). s.mu held.
func (s *Store) endWatch(w *watcher, err error) {
	delete(s.watchers, w)
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	close(w.c)
	close(w.done)
}

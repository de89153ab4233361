// Package statetest is the conformance suite every state.Store passes:
// state/bolt and state/etcd run it from their tests, so that the server
// cannot tell them apart.
//
// It waits for state by polling or by reading watch events, each bounded by
// a deadline, never by sleeping a fixed time; leases use TTLs under a second
// so the whole suite stays within a few seconds.
package statetest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
)

// deadline bounds every wait for the store to reach a state.
const deadline = 10 * time.Second

// Run runs the suite. open returns a new, empty store for each subtest; the
// suite closes it (Close must tolerate being called again by open's own
// cleanup). Revisions are compared relative to the store's starting one, so
// a store need not start at revision 0.
//
// Semantics checked beyond the state.Store doc comments, which a backend
// must share:
//   - Delete of a missing key and a failed compare change nothing, not even
//     the revision.
//   - A Put without a lease detaches the key from its old lease.
//   - Put with an unknown or expired lease fails with ferry.ENOTFOUND and
//     sets nothing.
//   - A watcher that never reads does not block writers: its events stay
//     buffered, or its channel closes with state.ErrCompacted after the
//     events it did get, in order — either is allowed.
func Run(t *testing.T, open func(t *testing.T) state.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, state.Store)
	}{
		{"GetPutDelete", testGetPutDelete},
		{"Revisions", testRevisions},
		{"List", testList},
		{"CompareAndSwap", testCompareAndSwap},
		{"CompareAndSwapMany", testCompareAndSwapMany},
		{"CompareAndDelete", testCompareAndDelete},
		{"ConcurrentCAS", testConcurrentCAS},
		{"WatchHistory", testWatchHistory},
		{"WatchFromNow", testWatchFromNow},
		{"WatchPrefix", testWatchPrefix},
		{"WatchDelete", testWatchDelete},
		{"WatchResume", testWatchResume},
		{"WatchCancel", testWatchCancel},
		{"WatchSlowReader", testWatchSlowReader},
		{"BlockingQueryIndex", testBlockingQueryIndex},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseKeepAlive", testLeaseKeepAlive},
		{"LeaseRevoke", testLeaseRevoke},
		{"LeaseUnknown", testLeaseUnknown},
		{"LeaseDetach", testLeaseDetach},
		{"CancelledCtx", testCancelledCtx},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, openStore(t, func(t *testing.T) state.Store { return open(t) }))
		})
	}
}

// openStore opens a store and closes it when t ends.
func openStore(t *testing.T, open func(*testing.T) state.Store) state.Store {
	t.Helper()
	s := open(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func mustPut(t *testing.T, s state.Store, key, value string, lease state.LeaseID) int64 {
	t.Helper()
	rev, err := s.Put(t.Context(), key, []byte(value), lease)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return rev
}

func mustRev(t *testing.T, s state.Store) int64 {
	t.Helper()
	rev, err := s.Rev(t.Context())
	if err != nil {
		t.Fatalf("Rev: %v", err)
	}
	return rev
}

func mustGet(t *testing.T, s state.Store, key string) state.KV {
	t.Helper()
	kv, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return kv
}

func mustGrant(t *testing.T, s state.Store, ttl time.Duration) state.LeaseID {
	t.Helper()
	id, err := s.Grant(t.Context(), ttl)
	if err != nil {
		t.Fatalf("Grant(%s): %v", ttl, err)
	}
	return id
}

func mustWatch(t *testing.T, ctx context.Context, s state.Store, prefix string, from int64) *state.Watcher {
	t.Helper()
	w, err := s.Watch(ctx, prefix, from)
	if err != nil {
		t.Fatalf("Watch(%q, %d): %v", prefix, from, err)
	}
	return w
}

func wantCode(t *testing.T, err error, code, what string) {
	t.Helper()
	if got := ferry.ErrorCode(err); got != code {
		t.Fatalf("%s: error %v (kind %q), want kind %q", what, err, got, code)
	}
}

func wantMissing(t *testing.T, s state.Store, key string) {
	t.Helper()
	_, err := s.Get(t.Context(), key)
	wantCode(t, err, ferry.ENOTFOUND, "Get("+key+")")
}

func wantValue(t *testing.T, kv state.KV, key, value string, rev int64) {
	t.Helper()
	if kv.Key != key || !bytes.Equal(kv.Value, []byte(value)) || (rev != 0 && kv.Rev != rev) {
		t.Fatalf("got %s=%q at rev %d, want %s=%q at rev %d", kv.Key, kv.Value, kv.Rev, key, value, rev)
	}
}

// next returns w's next event, failing if none comes before the deadline
// or the channel closes.
func next(t *testing.T, w *state.Watcher) state.Event {
	t.Helper()
	select {
	case ev, ok := <-w.C:
		if !ok {
			t.Fatalf("watch closed early: %v", w.Err())
		}
		return ev
	case <-time.After(deadline):
		t.Fatalf("no watch event within %s", deadline)
	}
	panic("unreachable")
}

// wantEvent reads w's next event and checks it; rev 0 accepts any revision.
func wantEvent(t *testing.T, w *state.Watcher, typ, key, value string, rev int64) state.Event {
	t.Helper()
	ev := next(t, w)
	if ev.Type != typ || ev.KV.Key != key || (rev != 0 && ev.KV.Rev != rev) {
		t.Fatalf("event %s %s at rev %d, want %s %s at rev %d", ev.Type, ev.KV.Key, ev.KV.Rev, typ, key, rev)
	}
	if typ == state.Delete && ev.KV.Value != nil {
		t.Fatalf("delete event of %s carries value %q", key, ev.KV.Value)
	}
	if typ == state.Put && !bytes.Equal(ev.KV.Value, []byte(value)) {
		t.Fatalf("put event of %s: value %q, want %q", key, ev.KV.Value, value)
	}
	return ev
}

// wantQuiet checks that w has no event ready now. It cannot prove none will
// come; the tests follow it with a write and check that that is next.
func wantQuiet(t *testing.T, w *state.Watcher) {
	t.Helper()
	select {
	case ev, ok := <-w.C:
		if ok {
			t.Fatalf("unexpected event %s %s at rev %d", ev.Type, ev.KV.Key, ev.KV.Rev)
		}
		t.Fatalf("watch closed early: %v", w.Err())
	default:
	}
}

// waitClosed drains w until its channel closes and returns what it drained.
func waitClosed(t *testing.T, w *state.Watcher) []state.Event {
	t.Helper()
	var evs []state.Event
	timeout := time.After(deadline)
	for {
		select {
		case ev, ok := <-w.C:
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		case <-timeout:
			t.Fatalf("watch not closed within %s", deadline)
		}
	}
}

// eventually polls cond until it holds, failing after the deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s", what, deadline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isNotFound(err error) bool { return ferry.ErrorCode(err) == ferry.ENOTFOUND }

func isCompacted(err error) bool { return errors.Is(err, state.ErrCompacted) }

package statetest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/state"
)

func testWatchHistory(t *testing.T, s state.Store) {
	ctx := t.Context()
	start := mustRev(t, s)
	var revs []int64
	for i := range 5 {
		revs = append(revs, mustPut(t, s, "h/"+strconv.Itoa(i), "v"+strconv.Itoa(i), 0))
	}

	all := mustWatch(t, ctx, s, "h/", start)
	w := mustWatch(t, ctx, s, "h/", revs[1])
	for i := 2; i < 5; i++ {
		wantEvent(t, w, state.Put, "h/"+strconv.Itoa(i), "v"+strconv.Itoa(i), revs[i])
	}
	wantQuiet(t, w)
	live := mustPut(t, s, "h/5", "v5", 0)
	wantEvent(t, w, state.Put, "h/5", "v5", live)

	for i := range 5 {
		wantEvent(t, all, state.Put, "h/"+strconv.Itoa(i), "v"+strconv.Itoa(i), revs[i])
	}
	wantEvent(t, all, state.Put, "h/5", "v5", live)
}

func testWatchFromNow(t *testing.T, s state.Store) {
	ctx := t.Context()
	mustPut(t, s, "n/old", "1", 0)
	w := mustWatch(t, ctx, s, "n/", 0)
	wantQuiet(t, w)
	rev := mustPut(t, s, "n/new", "2", 0)
	wantEvent(t, w, state.Put, "n/new", "2", rev)
}

func testWatchPrefix(t *testing.T, s state.Store) {
	ctx := t.Context()
	start := mustRev(t, s)
	w := mustWatch(t, ctx, s, "apps/hello/", start)
	everything := mustWatch(t, ctx, s, "", start)
	x := mustPut(t, s, "apps/hello/x", "1", 0)
	mustPut(t, s, "apps/hellox", "2", 0)
	mustPut(t, s, "apps/other", "3", 0)
	y := mustPut(t, s, "apps/hello/y", "4", 0)

	wantEvent(t, w, state.Put, "apps/hello/x", "1", x)
	wantEvent(t, w, state.Put, "apps/hello/y", "4", y)
	wantQuiet(t, w)
	for i, k := range []string{"apps/hello/x", "apps/hellox", "apps/other", "apps/hello/y"} {
		wantEvent(t, everything, state.Put, k, strconv.Itoa(i+1), x+int64(i))
	}
}

func testWatchDelete(t *testing.T, s state.Store) {
	ctx := t.Context()
	mustPut(t, s, "d/k", "v", 0)
	w := mustWatch(t, ctx, s, "d/", 0)
	if err := s.Delete(ctx, "d/k"); err != nil {
		t.Fatal(err)
	}
	rev := mustRev(t, s)
	wantEvent(t, w, state.Delete, "d/k", "", rev)

	// CompareAndDelete is a delete like any other.
	put := mustPut(t, s, "d/k", "v2", 0)
	wantEvent(t, w, state.Put, "d/k", "v2", put)
	if ok, err := s.CompareAndDelete(ctx, "d/k", put); !ok || err != nil {
		t.Fatalf("CompareAndDelete: ok=%v err=%v", ok, err)
	}
	wantEvent(t, w, state.Delete, "d/k", "", put+1)
}

// testWatchResume has a writer put n values while a reader watches in
// rounds: it takes some events, cancels, drains what is still buffered,
// and watches again from the last revision it saw. It must see every value
// once, in order.
func testWatchResume(t *testing.T, s state.Store) {
	const n, perRound = 200, 37
	ctx := t.Context()
	last := mustRev(t, s)

	writeErr := putValues(ctx, s, "r/k", n)

	seen := 0
	check := func(ev state.Event) {
		t.Helper()
		if ev.KV.Rev <= last || string(ev.KV.Value) != strconv.Itoa(seen) {
			t.Fatalf("after rev %d and %d values: got %q at rev %d", last, seen, ev.KV.Value, ev.KV.Rev)
		}
		last = ev.KV.Rev
		seen++
	}
	for rounds := 0; seen < n; rounds++ {
		if rounds > n {
			t.Fatal("watch makes no progress")
		}
		wctx, cancel := context.WithCancel(ctx)
		w := mustWatch(t, wctx, s, "r/", last)
		for i := 0; i < perRound && seen < n; i++ {
			check(next(t, w))
		}
		cancel()
		for _, ev := range waitClosed(t, w) {
			check(ev)
		}
		if err := w.Err(); err != nil {
			t.Fatalf("cancelled watch: Err = %v, want nil", err)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("writer: %v", err)
	}
}

func testWatchCancel(t *testing.T, s state.Store) {
	wctx, cancel := context.WithCancel(t.Context())
	w := mustWatch(t, wctx, s, "", 0)
	cancel()
	waitClosed(t, w)
	if err := w.Err(); err != nil {
		t.Fatalf("Err after cancel = %v, want nil", err)
	}
	mustPut(t, s, "after", "cancel", 0)
}

// slowWrites is how many changes the slow-reader test makes; a backend that
// buffers fewer closes the watch with state.ErrCompacted.
const slowWrites = 300

func testWatchSlowReader(t *testing.T, s state.Store) {
	ctx := t.Context()
	start := mustRev(t, s)
	w := mustWatch(t, ctx, s, "slow/", 0)

	writeErr := putValues(ctx, s, "slow/k", slowWrites)
	select {
	case err := <-writeErr:
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
	case <-time.After(deadline):
		t.Fatalf("%d writes not done within %s: a watcher that does not read blocks writers", slowWrites, deadline)
	}

	got := 0
	for got < slowWrites {
		select {
		case ev, ok := <-w.C:
			if !ok {
				if !isCompacted(w.Err()) {
					t.Fatalf("slow watch closed after %d events with Err %v, want state.ErrCompacted", got, w.Err())
				}
				t.Logf("slow watch closed with ErrCompacted after %d events", got)
				resumeAfterCompacted(t, s)
				return
			}
			if want := start + int64(got) + 1; ev.KV.Rev != want || string(ev.KV.Value) != strconv.Itoa(got) {
				t.Fatalf("slow watch event %d: %q at rev %d, want %q at rev %d", got, ev.KV.Value, ev.KV.Rev, strconv.Itoa(got), want)
			}
			got++
		case <-time.After(deadline):
			t.Fatalf("slow watch: %d of %d events and no close within %s", got, slowWrites, deadline)
		}
	}
	t.Logf("slow watch buffered all %d events", got)
}

// resumeAfterCompacted follows the advice of state.ErrCompacted: list, then
// watch from the listing's revision.
func resumeAfterCompacted(t *testing.T, s state.Store) {
	t.Helper()
	kvs, rev, err := s.List(t.Context(), "slow/")
	if err != nil || len(kvs) != 1 {
		t.Fatalf("List after ErrCompacted: %v, %v", keys(kvs), err)
	}
	wantValue(t, kvs[0], "slow/k", strconv.Itoa(slowWrites-1), rev)
	w := mustWatch(t, t.Context(), s, "slow/", rev)
	put := mustPut(t, s, "slow/k", "again", 0)
	wantEvent(t, w, state.Put, "slow/k", "again", put)
}

// testBlockingQueryIndex checks what the server's blocking queries
// (?index=N) rely on: the revision a write returns is visible in Rev at
// once, a watch from just before it sees it, and a watch from a listing's
// revision sees exactly the changes after the listing.
func testBlockingQueryIndex(t *testing.T, s state.Store) {
	ctx := t.Context()
	rev := mustPut(t, s, "desired/host1", "v1", 0)
	if cur := mustRev(t, s); cur < rev {
		t.Fatalf("Rev = %d right after a Put returned %d", cur, rev)
	}
	w := mustWatch(t, ctx, s, "desired/", rev-1)
	wantEvent(t, w, state.Put, "desired/host1", "v1", rev)

	if err := s.Delete(ctx, "desired/host1"); err != nil {
		t.Fatal(err)
	}
	del := mustRev(t, s)
	wantEvent(t, mustWatch(t, ctx, s, "desired/", del-1), state.Delete, "desired/host1", "", del)

	mustPut(t, s, "desired/host2", "v1", 0)
	kvs, index, err := s.List(ctx, "desired/")
	if err != nil || len(kvs) != 1 {
		t.Fatalf("List: %v, %v", keys(kvs), err)
	}
	w = mustWatch(t, ctx, s, "desired/", index)
	wantQuiet(t, w)
	next := mustPut(t, s, "desired/host2", "v2", 0)
	wantEvent(t, w, state.Put, "desired/host2", "v2", next)
}

// putValues puts the values 0 to n-1 in key in the background and sends
// the outcome.
func putValues(ctx context.Context, s state.Store, key string, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := s.Put(ctx, key, []byte(strconv.Itoa(i)), 0); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

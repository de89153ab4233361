package statetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/state"
)

func testGetPutDelete(t *testing.T, s state.Store) {
	ctx := t.Context()
	wantMissing(t, s, "app/hello")

	rev := mustPut(t, s, "app/hello", "v1", 0)
	wantValue(t, mustGet(t, s, "app/hello"), "app/hello", "v1", rev)
	rev2 := mustPut(t, s, "app/hello", "v2", 0)
	wantValue(t, mustGet(t, s, "app/hello"), "app/hello", "v2", rev2)

	// Values are the caller's to reuse.
	buf := []byte("v3")
	mustPutBytes(t, s, "app/buf", buf)
	buf[0] = 'x'
	wantValue(t, mustGet(t, s, "app/buf"), "app/buf", "v3", 0)
	kv := mustGet(t, s, "app/buf")
	kv.Value[0] = 'y'
	wantValue(t, mustGet(t, s, "app/buf"), "app/buf", "v3", 0)

	mustPut(t, s, "app/empty", "", 0)
	if kv := mustGet(t, s, "app/empty"); len(kv.Value) != 0 {
		t.Fatalf("empty value came back as %q", kv.Value)
	}

	if err := s.Delete(ctx, "app/hello"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "app/hello")

	before := mustRev(t, s)
	if err := s.Delete(ctx, "app/hello"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if after := mustRev(t, s); after != before {
		t.Fatalf("Delete of a missing key moved the revision from %d to %d", before, after)
	}
}

func mustPutBytes(t *testing.T, s state.Store, key string, value []byte) {
	t.Helper()
	if _, err := s.Put(t.Context(), key, value, 0); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func testRevisions(t *testing.T, s state.Store) {
	ctx := t.Context()
	rev := mustRev(t, s)
	if rev < 1 {
		t.Fatalf("a new store is at revision %d, want at least 1", rev)
	}
	for i := range 5 {
		got := mustPut(t, s, "rev/"+strconv.Itoa(i%2), strconv.Itoa(i), 0)
		if got != rev+1 {
			t.Fatalf("Put %d returned revision %d, want %d", i, got, rev+1)
		}
		rev = got
		if cur := mustRev(t, s); cur != rev {
			t.Fatalf("Rev = %d after a Put returned %d", cur, rev)
		}
	}
	if err := s.Delete(ctx, "rev/0"); err != nil {
		t.Fatal(err)
	}
	if cur := mustRev(t, s); cur != rev+1 {
		t.Fatalf("Rev = %d after a Delete, want %d", cur, rev+1)
	}
}

func testList(t *testing.T, s state.Store) {
	ctx := t.Context()
	revs := map[string]int64{}
	for _, k := range []string{"hosts/b", "hosts/a", "hostsx", "apps/z", "hosts/c/1", "hosts/"} {
		revs[k] = mustPut(t, s, k, "val-"+k, 0)
	}
	if err := s.Delete(ctx, "hosts/c/1"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "hosts/c/2", "val-hosts/c/2", 0)
	revs["hosts/c/2"] = mustRev(t, s)

	kvs, rev, err := s.List(ctx, "hosts/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if cur := mustRev(t, s); rev != cur {
		t.Fatalf("List revision %d, store at %d", rev, cur)
	}
	want := []string{"hosts/", "hosts/a", "hosts/b", "hosts/c/2"}
	if len(kvs) != len(want) {
		t.Fatalf("List(hosts/) = %v, want keys %v", keys(kvs), want)
	}
	for i, k := range want {
		wantValue(t, kvs[i], k, "val-"+k, revs[k])
	}

	all, _, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(keys(all)), "[apps/z hosts/ hosts/a hosts/b hosts/c/2 hostsx]"; got != want {
		t.Fatalf("List(\"\") = %s, want %s", got, want)
	}

	none, rev, err := s.List(ctx, "nothing/")
	if err != nil || len(none) != 0 || rev != mustRev(t, s) {
		t.Fatalf("List(nothing/) = %v, %d, %v; want nothing at the current revision", keys(none), rev, err)
	}
}

func keys(kvs []state.KV) []string {
	var ks []string
	for _, kv := range kvs {
		ks = append(ks, kv.Key)
	}
	return ks
}

func testCompareAndSwap(t *testing.T, s state.Store) {
	ctx := t.Context()
	rev, ok, err := s.CompareAndSwap(ctx, "lock", 0, []byte("a"), 0)
	if err != nil || !ok {
		t.Fatalf("create-only CAS on a missing key: ok=%v err=%v", ok, err)
	}
	wantValue(t, mustGet(t, s, "lock"), "lock", "a", rev)

	fails := []struct {
		name string
		key  string
		rev  int64
	}{
		{"create-only on an existing key", "lock", 0},
		{"older revision", "lock", rev - 1},
		{"newer revision", "lock", rev + 1},
		{"revision on a missing key", "missing", rev},
	}
	for _, f := range fails {
		_, ok, err := s.CompareAndSwap(ctx, f.key, f.rev, []byte("b"), 0)
		if err != nil || ok {
			t.Fatalf("CAS %s: ok=%v err=%v, want false and no error", f.name, ok, err)
		}
		if cur := mustRev(t, s); cur != rev {
			t.Fatalf("CAS %s moved the revision to %d from %d", f.name, cur, rev)
		}
	}
	wantValue(t, mustGet(t, s, "lock"), "lock", "a", rev)
	wantMissing(t, s, "missing")

	rev2, ok, err := s.CompareAndSwap(ctx, "lock", rev, []byte("b"), 0)
	if err != nil || !ok || rev2 != rev+1 {
		t.Fatalf("CAS at the right revision: rev=%d ok=%v err=%v, want rev %d", rev2, ok, err, rev+1)
	}
	wantValue(t, mustGet(t, s, "lock"), "lock", "b", rev2)
	if cur := mustRev(t, s); cur != rev2 {
		t.Fatalf("Rev = %d after CAS returned %d", cur, rev2)
	}
}

// testCompareAndSwapMany: all or nothing, new revisions within the call's
// range, a watcher sees every change, and bad batches are refused.
func testCompareAndSwapMany(t *testing.T, s state.Store) {
	ctx := t.Context()
	revA := mustPut(t, s, "many/a", "a1", 0)
	revB := mustPut(t, s, "many/b", "b1", 0)
	w, err := s.Watch(ctx, "many/", revB)
	if err != nil {
		t.Fatal(err)
	}

	// One stale compare: nothing changes, not even the revision.
	_, ok, err := s.CompareAndSwapMany(ctx, []state.Swap{
		{Key: "many/a", Rev: revA, Value: []byte("a2")},
		{Key: "many/b", Rev: revA, Value: []byte("b2")},
		{Key: "many/c", Rev: 0, Value: []byte("c1")},
	})
	if err != nil || ok {
		t.Fatalf("CompareAndSwapMany with one stale revision: ok=%v err=%v, want false and no error", ok, err)
	}
	if cur := mustRev(t, s); cur != revB {
		t.Fatalf("a failed CompareAndSwapMany moved the revision from %d to %d", revB, cur)
	}
	wantValue(t, mustGet(t, s, "many/a"), "many/a", "a1", revA)
	wantMissing(t, s, "many/c")

	before := mustRev(t, s)
	newRev, ok, err := s.CompareAndSwapMany(ctx, []state.Swap{
		{Key: "many/a", Rev: revA, Value: []byte("a2")},
		{Key: "many/b", Rev: revB, Value: []byte("b2")},
		{Key: "many/c", Rev: 0, Value: []byte("c1")},
	})
	if err != nil || !ok {
		t.Fatalf("CompareAndSwapMany: ok=%v err=%v", ok, err)
	}
	if cur := mustRev(t, s); cur != newRev {
		t.Fatalf("Rev = %d after CompareAndSwapMany returned %d", cur, newRev)
	}
	seen := map[string]bool{}
	for _, k := range []string{"a", "b", "c"} {
		kv := mustGet(t, s, "many/"+k)
		if string(kv.Value) != k+map[string]string{"a": "2", "b": "2", "c": "1"}[k] || kv.Rev <= before || kv.Rev > newRev {
			t.Fatalf("many/%s = %q at rev %d, want the new value at a revision in (%d, %d]", k, kv.Value, kv.Rev, before, newRev)
		}
	}
	for len(seen) < 3 {
		select {
		case ev, open := <-w.C:
			if !open {
				t.Fatalf("watch ended: %v", w.Err())
			}
			if ev.Type != state.Put || ev.KV.Rev <= before || ev.KV.Rev > newRev || seen[ev.KV.Key] {
				t.Fatalf("watch event %+v: want each key's put once, at a revision in (%d, %d]", ev, before, newRev)
			}
			seen[ev.KV.Key] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("watch saw %v of the 3 changes", seen)
		}
	}

	too := make([]state.Swap, state.MaxSwaps+1)
	for i := range too {
		too[i] = state.Swap{Key: fmt.Sprintf("many/big/%d", i), Value: []byte("x")}
	}
	for name, swaps := range map[string][]state.Swap{
		"over MaxSwaps": too,
		"a key twice":   {{Key: "many/d", Value: []byte("1")}, {Key: "many/d", Value: []byte("2")}},
		"an empty key":  {{Key: "", Value: []byte("1")}},
	} {
		if _, ok, err := s.CompareAndSwapMany(ctx, swaps); err == nil || ok {
			t.Errorf("CompareAndSwapMany with %s: ok=%v err=%v, want an error", name, ok, err)
		}
	}
	if cur := mustRev(t, s); cur != newRev {
		t.Fatalf("refused batches moved the revision from %d to %d", newRev, cur)
	}
}

func testCompareAndDelete(t *testing.T, s state.Store) {
	ctx := t.Context()
	rev := mustPut(t, s, "k", "v", 0)
	for _, bad := range []int64{rev - 1, rev + 1} {
		ok, err := s.CompareAndDelete(ctx, "k", bad)
		if err != nil || ok {
			t.Fatalf("CompareAndDelete at %d (key at %d): ok=%v err=%v", bad, rev, ok, err)
		}
	}
	wantValue(t, mustGet(t, s, "k"), "k", "v", rev)
	if cur := mustRev(t, s); cur != rev {
		t.Fatalf("failed CompareAndDelete moved the revision to %d from %d", cur, rev)
	}
	ok, err := s.CompareAndDelete(ctx, "k", rev)
	if err != nil || !ok {
		t.Fatalf("CompareAndDelete at the right revision: ok=%v err=%v", ok, err)
	}
	wantMissing(t, s, "k")
	if cur := mustRev(t, s); cur != rev+1 {
		t.Fatalf("Rev = %d after CompareAndDelete, want %d", cur, rev+1)
	}
	if ok, err := s.CompareAndDelete(ctx, "k", rev); err != nil || ok {
		t.Fatalf("CompareAndDelete of a missing key at %d: ok=%v err=%v", rev, ok, err)
	}
}

// testConcurrentCAS has 8 goroutines increment one counter by CAS: no
// increment may be lost, each success takes one revision, and a watch from
// before them replays every value in order.
func testConcurrentCAS(t *testing.T, s state.Store) {
	const workers, each = 8, 25
	ctx := t.Context()
	start := mustRev(t, s)

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				var n int
				kv, err := s.Get(ctx, "counter")
				switch {
				case isNotFound(err):
				case err != nil:
					errs <- err
					return
				default:
					if n, err = strconv.Atoi(string(kv.Value)); err != nil {
						errs <- err
						return
					}
				}
				_, ok, err := s.CompareAndSwap(ctx, "counter", kv.Rev, []byte(strconv.Itoa(n+1)), 0)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					done++
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("CAS worker: %v", err)
	}

	const total = workers * each
	wantValue(t, mustGet(t, s, "counter"), "counter", strconv.Itoa(total), start+total)
	w := mustWatch(t, ctx, s, "counter", start)
	for i := 1; i <= total; i++ {
		wantEvent(t, w, state.Put, "counter", strconv.Itoa(i), start+int64(i))
	}
}

// testCancelledCtx: a call with a cancelled ctx returns ctx.Err().
func testCancelledCtx(t *testing.T, s state.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Get(ctx, "k")
	wantCanceled(t, err, "Get")
	_, err = s.Put(ctx, "k", []byte("v"), 0)
	wantCanceled(t, err, "Put")
	_, err = s.Watch(ctx, "", 0)
	wantCanceled(t, err, "Watch")
	wantMissing(t, s, "k")
}

func wantCanceled(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%s with a cancelled ctx: %v, want context.Canceled", what, err)
	}
}

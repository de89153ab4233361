package statetest

import (
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
)

// RunPersistent checks a store that keeps its state in files: closed and
// opened again on the same dir, it has the same keys, revision, event
// history and leases, and a lease whose time passed while it was closed is
// expired. open opens the store kept in dir; the suite closes it.
func RunPersistent(t *testing.T, open func(t *testing.T, dir string) state.Store) {
	const short = 300 * time.Millisecond
	dir := t.TempDir()
	s := open(t, dir)
	ctx := t.Context()

	a := mustPut(t, s, "p/a", "1", 0)
	mustPut(t, s, "p/b", "2", 0)
	if err := s.Delete(ctx, "p/b"); err != nil {
		t.Fatal(err)
	}
	long := mustGrant(t, s, time.Minute)
	mustPut(t, s, "p/long", "3", long)
	granted := time.Now()
	shortID := mustGrant(t, s, short)
	mustPut(t, s, "p/short", "4", shortID)
	rev := mustRev(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Let the short lease's time pass while the store is closed.
	time.Sleep(time.Until(granted.Add(short + 100*time.Millisecond)))

	s = openStore(t, func(t *testing.T) state.Store { return open(t, dir) })
	wantValue(t, mustGet(t, s, "p/a"), "p/a", "1", a)
	wantMissing(t, s, "p/b")
	if kv := mustGet(t, s, "p/long"); kv.Lease != long {
		t.Fatalf("p/long lost its lease: %d, want %d", kv.Lease, long)
	}
	if cur := mustRev(t, s); cur < rev {
		t.Fatalf("revision went back from %d to %d across a restart", rev, cur)
	}
	wantCode(t, s.KeepAlive(ctx, shortID), ferry.ENOTFOUND, "KeepAlive of a lease that expired while closed")
	eventually(t, "key of a lease that expired while closed is deleted", func() bool {
		_, err := s.Get(ctx, "p/short")
		return isNotFound(err)
	})

	// The history of before the restart is still there to watch.
	w := mustWatch(t, ctx, s, "p/", a)
	wantEvent(t, w, state.Put, "p/b", "2", a+1)
	wantEvent(t, w, state.Delete, "p/b", "", a+2)
	wantEvent(t, w, state.Put, "p/long", "3", a+3)
	wantEvent(t, w, state.Put, "p/short", "4", a+4)
	ev := wantEvent(t, w, state.Delete, "p/short", "", 0)
	if ev.KV.Rev <= rev {
		t.Fatalf("expiry after the restart at rev %d, not after %d", ev.KV.Rev, rev)
	}

	// Revisions go on from where they were; lease IDs are not reused.
	cur := mustRev(t, s)
	if got := mustPut(t, s, "p/c", "5", 0); got != cur+1 {
		t.Fatalf("first Put after a restart at rev %d, want %d", got, cur+1)
	}
	if id := mustGrant(t, s, time.Minute); id == long || id == shortID {
		t.Fatalf("Grant after a restart reused lease %d", id)
	}
	if err := s.KeepAlive(ctx, long); err != nil {
		t.Fatalf("KeepAlive of a live lease after a restart: %v", err)
	}
	if err := s.Revoke(ctx, long); err != nil {
		t.Fatalf("Revoke after a restart: %v", err)
	}
	wantMissing(t, s, "p/long")
}

package statetest

import (
	"sort"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
)

// ttl is the lease TTL of the tests that wait for an expiry.
const ttl = 500 * time.Millisecond

func testLeaseExpiry(t *testing.T, s state.Store) {
	ctx := t.Context()
	id := mustGrant(t, s, ttl)
	rev := mustPut(t, s, "l/k", "v", id)
	if kv := mustGet(t, s, "l/k"); kv.Lease != id {
		t.Fatalf("key's lease = %d, want %d", kv.Lease, id)
	}
	w := mustWatch(t, ctx, s, "l/", rev)
	ev := wantEvent(t, w, state.Delete, "l/k", "", 0)
	if ev.KV.Rev <= rev {
		t.Fatalf("expiry delete at rev %d, not after the put at %d", ev.KV.Rev, rev)
	}
	wantMissing(t, s, "l/k")
	wantCode(t, s.KeepAlive(ctx, id), ferry.ENOTFOUND, "KeepAlive of an expired lease")
	_, err := s.Put(ctx, "l/k2", []byte("v"), id)
	wantCode(t, err, ferry.ENOTFOUND, "Put with an expired lease")
	wantMissing(t, s, "l/k2")
}

func testLeaseKeepAlive(t *testing.T, s state.Store) {
	ctx := t.Context()
	id := mustGrant(t, s, ttl)
	rev := mustPut(t, s, "l/k", "v", id)
	w := mustWatch(t, ctx, s, "l/", rev)
	// Renew at a fifth of the TTL for three TTLs: the key must outlive its
	// first deadline several times over.
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(ttl / 5) {
		if err := s.KeepAlive(ctx, id); err != nil {
			t.Fatalf("KeepAlive: %v", err)
		}
	}
	mustGet(t, s, "l/k")
	wantQuiet(t, w)
	// Left alone, it expires.
	wantEvent(t, w, state.Delete, "l/k", "", 0)
	wantMissing(t, s, "l/k")
}

func testLeaseRevoke(t *testing.T, s state.Store) {
	ctx := t.Context()
	id := mustGrant(t, s, time.Minute)
	mustPut(t, s, "l/a", "1", id)
	mustPut(t, s, "l/b", "2", id)
	mustPut(t, s, "l/c", "3", 0)
	before := mustRev(t, s)
	w := mustWatch(t, ctx, s, "l/", before)

	if err := s.Revoke(ctx, id); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	wantMissing(t, s, "l/a")
	wantMissing(t, s, "l/b")
	mustGet(t, s, "l/c")
	after := mustRev(t, s)
	if after <= before {
		t.Fatalf("Revoke deleted keys without moving the revision (%d)", after)
	}
	// A store may delete a lease's keys at one revision or at one each.
	var deleted []string
	for range 2 {
		ev := next(t, w)
		if ev.Type != state.Delete || ev.KV.Rev <= before || ev.KV.Rev > after {
			t.Fatalf("event %s %s at rev %d, want a delete in (%d, %d]", ev.Type, ev.KV.Key, ev.KV.Rev, before, after)
		}
		deleted = append(deleted, ev.KV.Key)
	}
	sort.Strings(deleted)
	if deleted[0] != "l/a" || deleted[1] != "l/b" {
		t.Fatalf("revoke deleted %v, want [l/a l/b]", deleted)
	}
	wantQuiet(t, w)
	wantCode(t, s.KeepAlive(ctx, id), ferry.ENOTFOUND, "KeepAlive of a revoked lease")
}

func testLeaseUnknown(t *testing.T, s state.Store) {
	ctx := t.Context()
	const unknown state.LeaseID = 987654321
	wantCode(t, s.KeepAlive(ctx, unknown), ferry.ENOTFOUND, "KeepAlive of an unknown lease")
	before := mustRev(t, s)
	_, err := s.Put(ctx, "l/k", []byte("v"), unknown)
	wantCode(t, err, ferry.ENOTFOUND, "Put with an unknown lease")
	wantMissing(t, s, "l/k")
	if cur := mustRev(t, s); cur != before {
		t.Fatalf("failed Put moved the revision from %d to %d", before, cur)
	}
}

// testLeaseDetach: a Put replaces the key's lease, as in etcd; revoking
// the old lease leaves the key alone.
func testLeaseDetach(t *testing.T, s state.Store) {
	ctx := t.Context()
	a := mustGrant(t, s, time.Minute)
	b := mustGrant(t, s, time.Minute)
	if a == b || a == 0 || b == 0 {
		t.Fatalf("Grant gave leases %d and %d", a, b)
	}
	mustPut(t, s, "l/k", "1", a)
	mustPut(t, s, "l/k", "2", 0)
	if kv := mustGet(t, s, "l/k"); kv.Lease != 0 {
		t.Fatalf("Put without a lease left lease %d", kv.Lease)
	}
	mustPut(t, s, "l/k", "3", b)
	if err := s.Revoke(ctx, a); err != nil {
		t.Fatal(err)
	}
	wantValue(t, mustGet(t, s, "l/k"), "l/k", "3", 0)
	if err := s.Revoke(ctx, b); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, s, "l/k")
}

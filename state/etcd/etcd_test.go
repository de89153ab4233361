package etcd_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/state"
	"github.com/ferrydeploy/ferry/state/etcd"
	"github.com/ferrydeploy/ferry/state/etcd/etcdtest"
	"github.com/ferrydeploy/ferry/state/statetest"
)

// TestSuite runs the conformance suite on one real etcd member; each
// subtest gets a store under its own prefix, which is as empty as a new
// store.
func TestSuite(t *testing.T) {
	c := etcdtest.Start(t, 1)
	var n atomic.Int64
	statetest.Run(t, func(t *testing.T) state.Store {
		s, err := etcd.Open(t.Context(), etcd.Options{
			Endpoints:   c.Endpoints(),
			Prefix:      fmt.Sprintf("/suite/%d/", n.Add(1)),
			WatchBuffer: 100, // below the slow-reader burst, as bolt's test does
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestElection: one of two campaigners leads; when its session ends, the
// other takes over within the session TTL.
func TestElection(t *testing.T) {
	c := etcdtest.Start(t, 1)
	open := func() *etcd.Store {
		s, err := etcd.Open(t.Context(), etcd.Options{Endpoints: c.Endpoints(), Prefix: "/election-test/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	actx, err := a.Election("leader", "a").Lead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	led := make(chan context.Context, 1)
	go func() {
		ctx, err := b.Election("leader", "b").Lead(t.Context())
		if err == nil {
			led <- ctx
		}
	}()
	select {
	case <-led:
		t.Fatal("b leads while a does")
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	a.Close() // a dies: its session lease is no longer renewed
	select {
	case <-led:
	case <-time.After(etcd.SessionTTL + 5*time.Second):
		t.Fatalf("b did not take over within %v", etcd.SessionTTL+5*time.Second)
	}
	t.Logf("b took over %v after a died", time.Since(start).Round(time.Millisecond))
	select {
	case <-actx.Done():
	case <-time.After(5 * time.Second):
		t.Error("a's leadership context did not end")
	}
}

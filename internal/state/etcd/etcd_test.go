package etcd_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/state"
	"github.com/ferrydeploy/ferry/internal/state/etcd"
	"github.com/ferrydeploy/ferry/internal/state/etcd/etcdtest"
	"github.com/ferrydeploy/ferry/internal/state/statetest"
	"github.com/ferrydeploy/ferry/internal/tlsca"
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

// TestSuiteCluster runs the suite on a three-member cluster, the client
// talking to all of them.
func TestSuiteCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	c := etcdtest.Start(t, 3)
	var n atomic.Int64
	statetest.Run(t, func(t *testing.T) state.Store {
		s, err := etcd.Open(t.Context(), etcd.Options{Endpoints: c.Endpoints(), Prefix: fmt.Sprintf("/cluster/%d/", n.Add(1)), WatchBuffer: 100})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestWatchAcrossMemberLoss: the only member a watch can stream from is
// killed in the middle of a run of writes (which go on through the other
// two) and comes back; the client's watch reconnects and delivers every
// write once, in order.
func TestWatchAcrossMemberLoss(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := t.Context()
	w, err := etcd.Open(ctx, etcd.Options{Endpoints: c.Endpoints()[:1], Prefix: "/reconnect/"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wr, err := etcd.Open(ctx, etcd.Options{Endpoints: c.Endpoints()[1:], Prefix: "/reconnect/"})
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	from, err := w.Rev(ctx)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := w.Watch(ctx, "k/", from)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	go func() {
		defer c.Restart(0)
		for i := range n {
			if i == n/2 {
				c.Kill(0)
			}
			for {
				if _, err := wr.Put(ctx, fmt.Sprintf("k/%03d", i), []byte("v"), 0); err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(20 * time.Millisecond) // a write lost to the election: again
			}
		}
	}()
	seen := map[string]bool{}
	last := from
	timeout := time.After(60 * time.Second)
	for len(seen) < n {
		select {
		case ev, ok := <-watch.C:
			if !ok {
				t.Fatalf("watch ended after %d of %d events: %v", len(seen), n, watch.Err())
			}
			if ev.KV.Rev <= last || seen[ev.KV.Key] {
				t.Fatalf("event %s at rev %d after rev %d: repeated or out of order", ev.KV.Key, ev.KV.Rev, last)
			}
			seen[ev.KV.Key], last = true, ev.KV.Rev
		case <-timeout:
			t.Fatalf("watch delivered %d of %d events within 60s", len(seen), n)
		}
	}
}

// TestTLS: a member that serves TLS is reached with --etcd-ca, and a
// client that does not trust its CA is refused with a clear error.
func TestTLS(t *testing.T) {
	files, err := tlsca.Ensure(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c := etcdtest.StartTLS(t, files.ServerCert, files.ServerKey, files.CACert)
	s, err := etcd.Open(t.Context(), etcd.Options{Endpoints: c.Endpoints(), Prefix: "/tls/", TLS: etcd.TLSFiles{CA: files.CACert}})
	if err != nil {
		t.Fatalf("Open with the CA: %v", err)
	}
	defer s.Close()
	if _, err := s.Put(t.Context(), "k", []byte("v"), 0); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}
	other, err := tlsca.Ensure(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if s, err := etcd.Open(ctx, etcd.Options{Endpoints: c.Endpoints(), Prefix: "/tls/", TLS: etcd.TLSFiles{CA: other.CACert}, DialTimeout: 2 * time.Second}); err == nil {
		s.Close()
		t.Fatal("Open trusting another CA succeeded")
	}
}

package bolt_test

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/state"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
	"github.com/ferrydeploy/ferry/internal/state/statetest"
)

func open(t *testing.T, dir string, opt bolt.Options) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(dir, "state.db"), opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestSuite(t *testing.T) {
	// A buffer smaller than the suite's slow-reader burst, so that the
	// test sees a slow watcher closed with ErrCompacted.
	statetest.Run(t, func(t *testing.T) state.Store {
		return open(t, t.TempDir(), bolt.Options{WatchBuffer: 100})
	})
}

func TestPersistent(t *testing.T) {
	statetest.RunPersistent(t, func(t *testing.T, dir string) state.Store {
		return open(t, dir, bolt.Options{})
	})
}

// TestHistoryCompacted: a watch from before the kept history ends at once
// with ErrCompacted; one from inside it replays.
func TestHistoryCompacted(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir(), bolt.Options{History: 10})
	defer s.Close()
	var last int64
	for i := range 30 {
		var err error
		if last, err = s.Put(ctx, "k", []byte(strconv.Itoa(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	w, err := s.Watch(ctx, "", last-11)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.C; ok || w.Err() != state.ErrCompacted {
		t.Fatalf("watch from before the history: open=%v Err=%v, want closed with ErrCompacted", ok, w.Err())
	}
	w, err = s.Watch(ctx, "", last-10)
	if err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 30; i++ {
		ev := <-w.C
		if string(ev.KV.Value) != strconv.Itoa(i) || ev.KV.Rev != last-29+int64(i) {
			t.Fatalf("replayed %q at %d, want %d at %d", ev.KV.Value, ev.KV.Rev, i, last-29+int64(i))
		}
	}
}

// TestCloseEndsWatches: Close ends open watches with an error and stops
// later calls.
func TestCloseEndsWatches(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir(), bolt.Options{})
	w, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.C; ok || w.Err() == nil {
		t.Fatalf("watch after Close: open=%v Err=%v, want closed with an error", ok, w.Err())
	}
	if _, err := s.Put(ctx, "k", nil, 0); err == nil {
		t.Fatal("Put after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestLocked: a second Open of the same file waits for the lock, then fails.
func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, bolt.Options{})
	defer s.Close()
	if _, err := bolt.Open(filepath.Join(dir, "state.db"), bolt.Options{LockTimeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("second Open of a locked file succeeded")
	}
}

// TestRenewedLeaseSurvivesRestart: renewals live in memory but reach the
// file, so a lease renewed past its first deadline is still alive after a
// Close and Open within its ttl.
func TestRenewedLeaseSurvivesRestart(t *testing.T) {
	const ttl = 400 * time.Millisecond
	dir := t.TempDir()
	s := open(t, dir, bolt.Options{})
	ctx := t.Context()
	id, err := s.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "held", []byte("x"), id); err != nil {
		t.Fatal(err)
	}
	for range 5 { // 5 × 150 ms: well past the first deadline
		time.Sleep(150 * time.Millisecond)
		if err := s.KeepAlive(ctx, id); err != nil {
			t.Fatalf("KeepAlive: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, bolt.Options{})
	defer s.Close()
	if err := s.KeepAlive(ctx, id); err != nil {
		t.Fatalf("KeepAlive after a restart within the ttl: %v", err)
	}
	if _, err := s.Get(ctx, "held"); err != nil {
		t.Fatalf("the renewed lease's key is gone after a restart: %v", err)
	}
}

package server

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/state/bolt"
)

// TestMirror: a blocking wait on the mirror returns as soon as its key
// changes, not for other keys; the mirror catches up after its watch falls
// behind (a tiny watch buffer forces relists); and an index from another
// store is answered at once.
func TestMirror(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{WatchBuffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	m := newMirror(st, "desired/")
	go m.run(ctx, func(error) {})
	deadline := time.Now().Add(5 * time.Second)
	for _, _, ok := m.get("desired/a"); !ok; _, _, ok = m.get("desired/a") {
		if time.Now().After(deadline) {
			t.Fatal("mirror never synced")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, idx, _ := m.get("desired/a")

	got := make(chan string, 1)
	go func() {
		val, _, _ := m.wait(ctx, "desired/a", idx, 10*time.Second)
		got <- string(val)
	}()
	st.Put(ctx, "desired/b", []byte("other"), 0)
	select {
	case v := <-got:
		t.Fatalf("wait on desired/a returned %q for a change to desired/b", v)
	case <-time.After(100 * time.Millisecond):
	}
	start := time.Now()
	st.Put(ctx, "desired/a", []byte("v1"), 0)
	select {
	case v := <-got:
		if v != "v1" {
			t.Fatalf("wait returned %q, want v1", v)
		}
		t.Logf("woke %v after the put", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return after its key changed")
	}

	// A burst larger than the watch buffer: the mirror relists and ends up
	// with every key's last value.
	for i := range 50 {
		st.Put(ctx, fmt.Sprintf("desired/h%02d", i%10), []byte(fmt.Sprint(i)), 0)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		v, _, ok := m.get("desired/h09")
		if ok && string(v) == "49" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror has desired/h09 = %q (synced %v), want 49", v, ok)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// An index this store never reached is answered at once.
	start = time.Now()
	if _, _, ok := m.wait(ctx, "desired/a", 1<<40, 10*time.Second); !ok || time.Since(start) > time.Second {
		t.Fatalf("a wait from a foreign index took %v", time.Since(start))
	}
}

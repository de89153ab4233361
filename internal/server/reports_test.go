package server

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
)

// TestReportWriterCoalesces: 300 reports sent at once are all stored, one
// per host, in far fewer transactions (CompareAndSwapMany calls) than
// reports.
func TestReportWriterCoalesces(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	counting := &countingStore{Store: st}
	w := newReportWriter(repo.New(counting))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go w.run(ctx)

	const hosts, rounds = 100, 3
	var wg sync.WaitGroup
	errs := make(chan error, hosts*rounds)
	for r := range rounds {
		for h := range hosts {
			wg.Go(func() { errs <- <-w.put(fmt.Sprintf("h%03d", h), repo.Report{From: fmt.Sprint(r)}) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	kvs, _, err := st.List(ctx, prefixReports)
	if err != nil || len(kvs) != hosts {
		t.Fatalf("%d reports stored (%v), want %d", len(kvs), err, hosts)
	}
	if n := counting.swaps.Load(); n >= hosts*rounds/4 {
		t.Errorf("%d transactions for %d reports: not coalesced", n, hosts*rounds)
	} else {
		t.Logf("%d reports in %d transactions", hosts*rounds, n)
	}
}

type countingStore struct {
	state.Store
	swaps atomic.Int64
}

func (c *countingStore) CompareAndSwapMany(ctx context.Context, swaps []state.Swap) (int64, bool, error) {
	c.swaps.Add(1)
	return c.Store.CompareAndSwapMany(ctx, swaps)
}

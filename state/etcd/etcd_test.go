package etcd_test

import (
	"fmt"
	"sync/atomic"
	"testing"

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

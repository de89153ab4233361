package blob_test

import (
	"context"
	"testing"

	"github.com/ferrydeploy/ferry/internal/store"
	"github.com/ferrydeploy/ferry/internal/store/blob"
	"github.com/ferrydeploy/ferry/internal/store/storetest"
)

// TestFileBucket runs the conformance suite on gocloud's file:// bucket.
func TestFileBucket(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := blob.Open(context.Background(), "file://"+t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

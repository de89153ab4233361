package etcd

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrydeploy/ferry"
)

// TestWrapTellsUnavailable: the forms in which etcd says it cannot answer
// now (no quorum, a leader change) are EUNAVAILABLE, told by code and
// sentinel, not by reading messages.
func TestWrapTellsUnavailable(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"the server's deadline, as gRPC carries it", status.Error(codes.Unknown, context.DeadlineExceeded.Error()), ferry.EUNAVAILABLE},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), ferry.EUNAVAILABLE},
		{"deadline", status.Error(codes.DeadlineExceeded, "x"), ferry.EUNAVAILABLE},
		{"another unknown error", status.Error(codes.Unknown, "something else"), ferry.EINTERNAL},
		{"a plain error", errors.New("boom"), ferry.EINTERNAL},
	} {
		if got := ferry.ErrorCode(wrap(ctx, tc.err)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

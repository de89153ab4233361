package server

import (
	"context"
	"io"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/store"
)

// blobKey finds where app's artifact sum is stored: at its
// store.ArtifactKey, or at the store.LegacyKey a server before that wrote,
// so upgrading the server loses no artifact. ENOTFOUND when at neither.
func (s *Server) blobKey(ctx context.Context, app, sum string) (key string, size int64, err error) {
	key = store.ArtifactKey(app, sum)
	size, err = s.blobs.Stat(ctx, key)
	if ferry.ErrorCode(err) != ferry.ENOTFOUND {
		return key, size, err
	}
	legacy := store.LegacyKey(sum)
	if n, lerr := s.blobs.Stat(ctx, legacy); lerr == nil {
		return legacy, n, nil
	}
	return key, 0, err
}

// openBlob reads app's artifact sum from offset on.
func (s *Server) openBlob(ctx context.Context, app, sum string, offset int64) (io.ReadCloser, int64, error) {
	key, _, err := s.blobKey(ctx, app, sum)
	if err != nil {
		return nil, 0, err
	}
	return s.blobs.Open(ctx, key, offset)
}

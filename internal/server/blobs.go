package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/store"
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

// openBlob reads app's artifact sum from offset on, from where blobKey
// would find it, without asking the store first (Open sizes the blob
// itself: one round trip less per download from a bucket).
func (s *Server) openBlob(ctx context.Context, app, sum string, offset int64) (io.ReadCloser, int64, error) {
	rc, size, err := s.blobs.Open(ctx, store.ArtifactKey(app, sum), offset)
	if ferry.ErrorCode(err) != ferry.ENOTFOUND {
		return rc, size, err
	}
	if rc, size, lerr := s.blobs.Open(ctx, store.LegacyKey(sum), offset); lerr == nil {
		return rc, size, nil
	}
	return nil, 0, err
}

// URLSigner is a store that can hand out URLs reading a key without
// credentials until they expire (S3's presigned URLs, GCS's signed URLs).
type URLSigner interface {
	SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error)
}

// checkSigner makes sure the store signs URLs before the server promises
// agents direct downloads: signing is local, so one try tells.
func checkSigner(blobs store.Store) (URLSigner, error) {
	sg, ok := blobs.(URLSigner)
	if !ok {
		return nil, ferry.Errorf(ferry.EINVALID, "server: --direct-download: the artifact store cannot sign URLs; use an s3:// or gs:// --store")
	}
	if _, err := sg.SignedURL(context.Background(), store.ArtifactKey("check", "signing"), time.Minute); err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "server: --direct-download: the artifact store cannot sign URLs (gs:// needs a service account key or the metadata server's signBlob; file:// cannot)")
	}
	return sg, nil
}

// redirectToStore answers an agent's download with a short-lived URL of
// the store itself. Each attempt and each resume asks again, so a URL only
// needs to live as long as one attempt may wait to start.
func (s *Server) redirectToStore(w http.ResponseWriter, r *http.Request, app, sum string) error {
	key, _, err := s.blobKey(r.Context(), app, sum)
	if err != nil {
		return err
	}
	u, err := s.signer.SignedURL(r.Context(), key, s.cfg.DirectDownload)
	if err != nil {
		return fmt.Errorf("sign a download URL for %s: %w", key, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
	return nil
}

package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/store"
)

// upload streams the body into the store while hashing it; a digest that
// does not match X-Ferry-SHA256 fails the store's Put, which leaves
// nothing behind. The app comes first in X-Ferry-App, so a credential
// scoped to other apps is refused before any byte is sent, and the bytes
// go straight to their key, artifacts/<app>/<sha256>.tar.zst. An artifact
// the server has is answered 200 before the body too: a publish is one
// request, and sends the bytes only when they are new. The record's
// metadata (meta.json, ferry.yaml's deploy policy) is taken from the body
// as it streams by: nothing is read back from the store.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	sum := strings.ToLower(r.Header.Get(api.SHA256Header))
	if err := ferry.CheckSHA256(sum); err != nil {
		return fmt.Errorf("%s, the artifact's sha256: %w", api.SHA256Header, err)
	}
	app := r.Header.Get(api.AppHeader)
	if app == "" {
		return ferry.Errorf(ferry.EINVALID, "%s: name the artifact's app (ferry publish does; a ferry older than the server does not: update it)", api.AppHeader)
	}
	if err := ferry.CheckAppName(app); err != nil {
		return fmt.Errorf("%s: %w", api.AppHeader, err)
	}
	if err := p.scopeApp(app); err != nil {
		return err
	}
	rec, found, err := s.repo.Artifact(ctx, sum)
	if err != nil {
		return err
	}
	if found && rec.App != app {
		return ferry.Errorf(ferry.EINVALID, "artifact %s is %s's, not %s's", sum, rec.App, app)
	}
	if found {
		if _, _, err := s.blobKey(ctx, app, sum); err == nil {
			rec.Existed = true
			return writeJSON(w, http.StatusOK, rec.Artifact)
		}
	}
	if r.ContentLength < 0 {
		return ferry.Errorf(ferry.EINVALID, "upload: send a Content-Length")
	}
	// Refused before a byte is read (a client that asked 100-continue
	// sends none), and the store never sees more than Content-Length.
	if max := s.cfg.maxArtifactSize(); r.ContentLength > max {
		return ferry.Errorf(ferry.ETOOLARGE, "upload: the artifact is %d bytes, over this server's limit of %d (ferry server --max-artifact-size)", r.ContentLength, max)
	}
	key := store.ArtifactKey(app, sum)
	// Bytes under the key with no record: an upload that failed after
	// storing them, or a bucket another server filled. Keep them only if
	// they are what their name says; then the body is never read (and a
	// client that asked 100-continue never sends it).
	had := false
	if _, err := s.blobs.Stat(ctx, key); err == nil {
		rec, err = s.inspectStored(ctx, key, sum)
		switch ferry.ErrorCode(err) {
		case "":
			had = true
		case ferry.ECORRUPT:
			s.log.Warn("replacing a corrupt stored artifact", "key", key, logErr, err)
		default:
			return err
		}
	}
	if !had {
		// A deployer's upload over a slow link takes as long as it
		// takes, as long as it moves.
		streamBody(r, s.cfg.uploadStall())
		vr := &verifyReader{r: r.Body, h: sha256.New(), want: sum, size: r.ContentLength}
		tap := artifact.NewFileTap(specFiles...)
		err := s.blobs.Put(ctx, key, io.TeeReader(vr, tap), r.ContentLength)
		files, readErr := tap.Done()
		if err != nil {
			return err
		}
		rec, err = newArtifactRecord(sum, r.ContentLength, files, readErr)
		if err == nil && rec.App != app {
			err = ferry.Errorf(ferry.EINVALID, "the artifact is %s's (its %s says so), not %s's as %s says", rec.App, ferry.MetaPath, app, api.AppHeader)
		}
		if err != nil {
			s.blobs.Delete(context.WithoutCancel(ctx), key)
			return err
		}
	} else if rec.App != app {
		return ferry.Errorf(ferry.EINVALID, "the artifact is %s's (its %s says so), not %s's as %s says", rec.App, ferry.MetaPath, app, api.AppHeader)
	}
	rec.Uploaded, rec.By = time.Now().UTC(), p.who()
	if err := s.repo.PutArtifact(ctx, rec); err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "publish", Target: "artifact/" + sum, Detail: fmt.Sprintf("%s %s", rec.App, rec.Version), App: rec.App})
	return writeJSON(w, http.StatusCreated, rec.Artifact)
}

// verifyReader hashes what it reads. The read that completes the body
// holds back its last byte when the digest is not the one promised, so a
// store that copies exactly Content-Length bytes still sees the error.
type verifyReader struct {
	r       io.Reader
	h       hash.Hash
	want    string
	n, size int64
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.size {
		return 0, ferry.Errorf(ferry.EINVALID, "upload: body longer than its Content-Length %d", v.size)
	}
	if v.n == v.size && n > 0 {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n - 1, ferry.Errorf(ferry.EINVALID, "upload: checksum mismatch: the body's sha256 is %s, %s says %s", got, api.SHA256Header, v.want)
		}
	}
	return n, err
}

func (s *Server) listArtifacts(w http.ResponseWriter, r *http.Request, p *principal) error {
	recs, err := s.repo.Artifacts(r.Context())
	if err != nil {
		return err
	}
	app := r.URL.Query().Get("app")
	arts := make([]api.Artifact, 0, len(recs))
	for _, a := range recs {
		if (app == "" || a.App == app) && p.coversApp(a.App) {
			arts = append(arts, a.Artifact)
		}
	}
	slices.SortFunc(arts, func(a, b api.Artifact) int { return a.Uploaded.Compare(b.Uploaded) })
	return writeJSON(w, http.StatusOK, arts)
}

// download serves an artifact from byte N on when asked with
// "Range: bytes=N-", so an agent resumes an interrupted download. Agents
// may fetch only the artifacts their desired state names.
func (s *Server) download(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	sum := r.PathValue("sha256")
	art, found, err := s.repo.Artifact(ctx, sum)
	if err != nil {
		return err
	} else if !found {
		return ferry.Errorf(ferry.ENOTFOUND, "artifact %s: not published", sum)
	}
	if p.Role == api.RoleAgent {
		hd, err := s.repo.Desired(ctx, p.Host)
		if err != nil {
			return err
		}
		if !hd.Names(sum) {
			return ferry.Errorf(ferry.EDENIED, "host %s: artifact %s is not in its desired state", p.Host, sum)
		}
		if s.signer != nil && r.Method == http.MethodGet {
			return s.redirectToStore(w, r, art.App, sum)
		}
	} else if err := s.mayDownload(ctx, p, art.App); err != nil {
		return err
	}
	var offset, end int64 = 0, -1
	if rg := r.Header.Get("Range"); rg != "" && r.Method == http.MethodGet {
		var err error
		if offset, end, err = parseRange(rg); err != nil {
			return err
		}
	}
	if r.Method == http.MethodHead {
		_, size, err := s.blobKey(ctx, art.App, sum)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Accept-Ranges", "bytes")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	rc, size, err := s.openBlob(ctx, art.App, sum, offset)
	if err != nil {
		return err
	}
	defer rc.Close()
	if end < 0 || end >= size {
		end = size - 1
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(end-offset+1, 10))
	status := http.StatusOK
	if r.Header.Get("Range") != "" {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, end, size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	_, err = io.CopyN(w, rc, end-offset+1)
	if err != nil {
		s.log.Debug("download interrupted", "sha256", sum, logErr, err)
	}
	return nil
}

// parseRange reads "bytes=N-" or "bytes=N-M", the single ranges a
// resuming download asks for.
func parseRange(rg string) (start, end int64, err error) {
	spec, ok := strings.CutPrefix(rg, "bytes=")
	a, b, ok2 := strings.Cut(spec, "-")
	if !ok || !ok2 || strings.Contains(spec, ",") {
		return 0, 0, ferry.Errorf(ferry.EINVALID, "Range %q: want bytes=N- or bytes=N-M", rg)
	}
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return 0, 0, ferry.Errorf(ferry.EINVALID, "Range %q: want bytes=N- or bytes=N-M", rg)
	}
	end = -1
	if b != "" {
		if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
			return 0, 0, ferry.Errorf(ferry.EINVALID, "Range %q: want bytes=N- or bytes=N-M", rg)
		}
	}
	return start, end, nil
}

// mayDownload checks that p may read app's artifacts: its scope covers
// the app and, when it is scoped to some groups, one of them runs the app
// (an artifact of an app that runs only in other groups is theirs).
func (s *Server) mayDownload(ctx context.Context, p *principal, app string) error {
	if err := p.scopeApp(app); err != nil {
		return err
	}
	if p.coversGroup("") {
		return nil
	}
	for _, g := range p.Groups {
		if _, ok, err := s.repo.GroupRelease(ctx, app, g); err != nil {
			return err
		} else if ok {
			return nil
		}
	}
	return ferry.Errorf(ferry.EDENIED, "token %s may not read app %s's artifacts: the app runs in none of its groups (%s)", p.Name, app, strings.Join(p.Groups, ", "))
}

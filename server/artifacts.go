package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/artifact"
	"github.com/ferrydeploy/ferry/store"
)

var sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)

// upload streams the body into the store while hashing it; a digest that
// does not match X-Ferry-SHA256 fails the store's Put, which leaves
// nothing behind.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	sum := strings.ToLower(r.Header.Get(api.SHA256Header))
	if !sha256Re.MatchString(sum) {
		return ferry.Errorf(ferry.EINVALID, "%s: want the artifact's sha256, 64 hex digits", api.SHA256Header)
	}
	var rec api.Artifact
	if found, err := s.lookup(ctx, prefixArts+sum, &rec); err != nil {
		return err
	} else if found {
		if _, err := s.blobs.Stat(ctx, store.Key(sum)); err == nil {
			if err := p.scope(rec.App, ""); err != nil {
				return err
			}
			rec.Existed = true
			return writeJSON(w, http.StatusOK, rec)
		}
	}
	if r.ContentLength < 0 {
		return ferry.Errorf(ferry.EINVALID, "upload: send a Content-Length")
	}
	_, statErr := s.blobs.Stat(ctx, store.Key(sum))
	had := statErr == nil
	if !had {
		vr := &verifyReader{r: r.Body, h: sha256.New(), want: sum, size: r.ContentLength}
		if err := s.blobs.Put(ctx, store.Key(sum), vr, r.ContentLength); err != nil {
			return err
		}
	}
	meta, size, err := s.readMeta(ctx, sum)
	if err == nil {
		err = p.scope(meta.App, "")
	}
	if err != nil {
		if !had {
			s.blobs.Delete(context.WithoutCancel(ctx), store.Key(sum))
		}
		return err
	}
	rec = api.Artifact{SHA256: sum, App: meta.App, Version: meta.Version, Size: size, Uploaded: time.Now().UTC(), By: p.who()}
	if err := s.putJSON(ctx, prefixArts+sum, rec); err != nil {
		return err
	}
	s.auditReq(r, p, "publish", "artifact/"+sum, fmt.Sprintf("%s %s", meta.App, meta.Version))
	return writeJSON(w, http.StatusCreated, rec)
}

// readMeta reads .ferry/meta.json of a stored artifact.
func (s *Server) readMeta(ctx context.Context, sum string) (ferry.Meta, int64, error) {
	var m ferry.Meta
	rc, size, err := s.blobs.Open(ctx, store.Key(sum), 0)
	if err != nil {
		return m, 0, err
	}
	defer rc.Close()
	files, err := artifact.ReadFiles(rc, ferry.MetaPath)
	if err != nil {
		return m, 0, ferry.WrapError(ferry.EINVALID, err, "not a ferry artifact")
	}
	b, ok := files[ferry.MetaPath]
	if !ok {
		return m, 0, ferry.Errorf(ferry.EINVALID, "not a ferry artifact: no %s (build it with ferry build)", ferry.MetaPath)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.App == "" {
		return m, 0, ferry.Errorf(ferry.EINVALID, "not a ferry artifact: bad %s", ferry.MetaPath)
	}
	return m, size, nil
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
	arts, err := listJSON[api.Artifact](r.Context(), s.st, prefixArts)
	if err != nil {
		return err
	}
	app := r.URL.Query().Get("app")
	arts = slices.DeleteFunc(arts, func(a api.Artifact) bool { return (app != "" && a.App != app) || !p.allowed(a.App, "") })
	slices.SortFunc(arts, func(a, b api.Artifact) int { return a.Uploaded.Compare(b.Uploaded) })
	return writeJSON(w, http.StatusOK, arts)
}

// download serves an artifact from byte N on when asked with
// "Range: bytes=N-", so an agent resumes an interrupted download. Agents
// may fetch only the artifacts their desired state names.
func (s *Server) download(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	sum := r.PathValue("sha256")
	if p.Role == api.RoleAgent {
		hd, err := s.hostDesired(ctx, p.Host)
		if err != nil {
			return err
		}
		if !hd.names(sum) {
			return ferry.Errorf(ferry.EDENIED, "host %s: artifact %s is not in its desired state", p.Host, sum)
		}
	}
	var offset, end int64 = 0, -1
	if rg := r.Header.Get("Range"); rg != "" && r.Method == http.MethodGet {
		var err error
		if offset, end, err = parseRange(rg); err != nil {
			return err
		}
	}
	if r.Method == http.MethodHead {
		size, err := s.blobs.Stat(ctx, store.Key(sum))
		if err != nil {
			return err
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Accept-Ranges", "bytes")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	rc, size, err := s.blobs.Open(ctx, store.Key(sum), offset)
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

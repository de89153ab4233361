package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/artifact"
)

// UploadArtifact publishes the artifact file at path in one request. It
// reads the file once for its sha256 and app (meta.json), then sends it
// with both in headers and Expect: 100-continue: a server that has those
// bytes answers at once with their record, Existed set, and the file is
// not read again; otherwise the server asks for the body and takes the
// rest of what it records from it. progress, when not nil, is called as
// bytes go out.
func (c *Client) UploadArtifact(ctx context.Context, path string, progress func(done, total int64)) (api.Artifact, error) {
	var a api.Artifact
	f, err := openArtifact(path)
	if err != nil {
		return a, ferry.WrapError(ferry.EINVALID, err, "publish")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return a, fmt.Errorf("publish: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return a, ferry.Errorf(ferry.EINVALID, "publish: %s is not a file", path)
	}
	sum, meta, err := scanArtifact(ctx, f, path)
	if err != nil {
		return a, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return a, fmt.Errorf("publish: %w", err)
	}
	var body io.Reader = ctxReader{ctx, f}
	if progress != nil {
		body = &progressReader{r: body, total: fi.Size(), fn: progress}
	}
	_, err = c.do(ctx, call{
		method: http.MethodPost, path: api.PathArtifacts,
		raw: body, length: fi.Size(),
		// 100-continue: an artifact the server has, or a refused
		// credential, is answered before a byte of the body is sent.
		header: http.Header{api.SHA256Header: {sum}, api.AppHeader: {meta.App}, "Content-Type": {"application/octet-stream"}, "Expect": {"100-continue"}},
		out:    &a, wait: -1,
	})
	return a, err
}

// artifactFile is what UploadArtifact reads: an *os.File, or in tests one
// that counts its reads.
type artifactFile interface {
	io.ReadSeekCloser
	Stat() (fs.FileInfo, error)
}

// openArtifact opens the file UploadArtifact publishes; tests replace it.
var openArtifact = func(name string) (artifactFile, error) { return os.Open(name) }

// scanArtifact reads f once, hashing every byte while meta.json is taken
// from the same bytes on their way through.
func scanArtifact(ctx context.Context, f io.Reader, path string) (string, ferry.Meta, error) {
	var meta ferry.Meta
	h := sha256.New()
	r := ctxReader{ctx, f}
	files, err := artifact.ReadFiles(io.TeeReader(r, h), ferry.MetaPath)
	if ctx.Err() != nil {
		return "", meta, ctx.Err()
	}
	if err != nil {
		return "", meta, ferry.WrapError(ferry.EINVALID, err, "publish %s: not a ferry artifact", path)
	}
	if err := json.Unmarshal(files[ferry.MetaPath], &meta); err != nil || meta.App == "" {
		return "", meta, ferry.Errorf(ferry.EINVALID, "publish %s: not a ferry artifact (no app in %s); build it with ferry build", path, ferry.MetaPath)
	}
	// ReadFiles stops at meta.json: the rest is only hashed.
	if _, err := io.Copy(h, r); err != nil {
		return "", meta, fmt.Errorf("publish: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), meta, nil
}

// HasArtifact reports whether the server stores the artifact sha256.
func (c *Client) HasArtifact(ctx context.Context, sha256 string) (bool, error) {
	_, err := c.do(ctx, call{method: http.MethodHead, path: path(api.PathArtifact, sha256)})
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return false, nil
	}
	return err == nil, err
}

// Artifacts lists the artifacts the server stores.
func (c *Client) Artifacts(ctx context.Context) ([]api.Artifact, error) {
	var out []api.Artifact
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathArtifacts, out: &out})
	return out, err
}

// progressReader reports bytes read so far, from 0 at the first read: an
// upload the server declines before the body reports nothing.
type progressReader struct {
	r       io.Reader
	done    int64
	total   int64
	fn      func(done, total int64)
	started bool
}

func (p *progressReader) Read(b []byte) (int, error) {
	if !p.started {
		p.started = true
		p.fn(0, p.total)
	}
	n, err := p.r.Read(b)
	p.done += int64(n)
	if n > 0 {
		p.fn(p.done, p.total)
	}
	return n, err
}

// ctxReader stops reading once ctx is done, so a cancelled upload or hash
// of a big file ends at once.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

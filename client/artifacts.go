package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/artifact"
)

// UploadArtifact publishes the artifact file at path. It hashes the file,
// asks the server whether it has that sha256 (HEAD) and, when it has,
// returns its record with Existed set without sending a byte. Otherwise it
// streams the file with its digest in api.SHA256Header; the server verifies
// and registers it. progress, when not nil, is called as bytes go out.
func (c *Client) UploadArtifact(ctx context.Context, path string, progress func(done, total int64)) (api.Artifact, error) {
	var a api.Artifact
	f, err := os.Open(path)
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
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return a, fmt.Errorf("publish: hash %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return a, fmt.Errorf("publish: %w", err)
	}
	files, err := artifact.ReadFiles(ctxReader{ctx, f}, ferry.MetaPath)
	if err != nil {
		return a, ferry.WrapError(ferry.EINVALID, err, "publish %s: not a ferry artifact", path)
	}
	var meta ferry.Meta
	if err := json.Unmarshal(files[ferry.MetaPath], &meta); err != nil || meta.App == "" {
		return a, ferry.Errorf(ferry.EINVALID, "publish %s: not a ferry artifact (no app in %s); build it with ferry build", path, ferry.MetaPath)
	}
	has, err := c.HasArtifact(ctx, sum)
	if err != nil {
		return a, err
	}
	if has {
		return c.existing(ctx, sum, fi.Size())
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return a, fmt.Errorf("publish: %w", err)
	}
	var body io.Reader = ctxReader{ctx, f}
	if progress != nil {
		progress(0, fi.Size())
		body = &progressReader{r: body, total: fi.Size(), fn: progress}
	}
	_, err = c.do(ctx, call{
		method: http.MethodPost, path: api.PathArtifacts,
		raw: body, length: fi.Size(),
		// 100-continue: a refused credential is answered before the
		// whole artifact has been sent for nothing.
		header: http.Header{api.SHA256Header: {sum}, api.AppHeader: {meta.App}, "Content-Type": {"application/octet-stream"}, "Expect": {"100-continue"}},
		out:    &a, wait: -1,
	})
	return a, err
}

// existing is the record of an artifact the server already has. HEAD says
// only that it exists, so its app and version come from the listing.
func (c *Client) existing(ctx context.Context, sum string, size int64) (api.Artifact, error) {
	list, err := c.Artifacts(ctx)
	if err != nil {
		return api.Artifact{}, err
	}
	for _, a := range list {
		if a.SHA256 == sum {
			a.Existed = true
			return a, nil
		}
	}
	return api.Artifact{SHA256: sum, Size: size, Existed: true}, nil
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

// progressReader reports bytes read so far.
type progressReader struct {
	r     io.Reader
	done  int64
	total int64
	fn    func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
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

package fetch

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// File reads local files: file:///abs/path or a plain path.
type File struct{}

var _ Source = File{}

// Open opens u's path at offset.
func (File) Open(_ context.Context, u *url.URL, offset int64) (io.ReadCloser, bool, error) {
	p := u.Path
	if u.Host != "" && u.Host != "localhost" { // file://relative/path, as stretcher tolerates
		p = u.Host + u.Path
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, false, err
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, false, err
		}
	}
	return f, true, nil
}

// StatusError is an HTTP answer other than the bytes asked for.
type StatusError struct {
	URL    string
	Status string
	Code   int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s answered %s, not the file", e.URL, e.Status)
}

// HTTP reads http:// and https:// URLs, resuming with Range.
type HTTP struct {
	Client *http.Client
}

var _ Source = HTTP{}

// NewHTTP returns an HTTP source whose client has connect and header
// timeouts but no overall one, since artifacts can be large.
func NewHTTP() HTTP {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 30 * time.Second
	t.DisableCompression = true // the digest is of the bytes as stored
	return HTTP{Client: &http.Client{Transport: t}}
}

// Open GETs u, asking for bytes from offset on.
func (h HTTP) Open(ctx context.Context, u *url.URL, offset int64) (io.ReadCloser, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("User-Agent", "ferry")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, false, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return resp.Body, false, nil
	case resp.StatusCode == http.StatusPartialContent && offset > 0 &&
		strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", offset)):
		return resp.Body, true, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return nil, false, &StatusError{URL: Redact(u), Status: resp.Status, Code: resp.StatusCode}
}

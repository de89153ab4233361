package desired

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/ferrydeploy/ferry/internal/fetch"
)

// urlWatcher polls a document over HTTP with conditional requests.
type urlWatcher struct {
	u      *url.URL
	client *http.Client
	r      *reporter

	body           []byte // the last 200 answer's body, which a 304 refers to
	etag, modified string // that answer's validators
}

func watchURL(ctx context.Context, u *url.URL, opt Options, r *reporter) error {
	w := &urlWatcher{u: u, client: opt.Client, r: r}
	if w.client == nil {
		w.client = &http.Client{Timeout: 30 * time.Second}
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		b, err := w.get(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			w.r.fail(fmt.Errorf("desired state: %w", err))
		default:
			w.r.bytes(b)
		}
		t.Reset(opt.Poll)
	}
}

// get returns the document, from the last body when the server says it has
// not changed since.
func (w *urlWatcher) get(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "ferry")
	if w.body != nil {
		if w.etag != "" {
			req.Header.Set("If-None-Match", w.etag)
		}
		if w.modified != "" {
			req.Header.Set("If-Modified-Since", w.modified)
		}
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && w.body != nil:
		return w.body, nil
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return nil, fmt.Errorf("GET %s: server answered %s", fetch.Redact(w.u), resp.Status)
	}
	b, err := readAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", fetch.Redact(w.u), err)
	}
	// Validators are kept only from a full answer, so a 304 always refers
	// to bytes this watcher holds.
	w.body, w.etag, w.modified = b, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	return b, nil
}

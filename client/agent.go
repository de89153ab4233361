package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// Join registers a host with a join token (in req, not the client's
// credential). The answer's Secret is the host's own credential: make a
// new client with it.
func (c *Client) Join(ctx context.Context, req api.JoinRequest) (api.JoinResponse, error) {
	var out api.JoinResponse
	_, err := c.do(ctx, call{method: http.MethodPost, path: api.PathAgentJoin, body: req, out: &out, noAuth: true})
	return out, err
}

// Desired returns this host's desired state (agent credential). With
// index > 0 it blocks until the state's index passes index, or for wait.
func (c *Client) Desired(ctx context.Context, index uint64, wait time.Duration) (api.Desired, error) {
	var out api.Desired
	h, err := c.do(ctx, call{method: http.MethodGet, path: api.PathDesired, query: blockingQuery(index, wait), out: &out, wait: wait})
	if err == nil && out.Index == 0 {
		out.Index = indexOf(h)
	}
	return out, err
}

// Report tells the server what runs on this host.
func (c *Client) Report(ctx context.Context, r api.Report) error {
	_, err := c.do(ctx, call{method: http.MethodPost, path: api.PathReport, body: r})
	return err
}

// ArtifactSource returns a fetch.Source for https URLs of this server
// (api.PathArtifact): this client's TLS trust and credential, so an agent's
// download authenticates. Register it for "https" (and "http") in the
// agent's fetch.Registry. The credential goes only to this server's host,
// never to another host a URL or a redirect names: a server with
// --direct-download redirects to the store's signed URL, which is fetched
// with the system's roots, not the pinned CA.
func (c *Client) ArtifactSource() fetch.Source {
	tr := c.tr.Clone()
	// Unlike a blocking query, a download's headers come at once.
	tr.ResponseHeaderTimeout = 30 * time.Second
	tr.DisableCompression = true // the digest is of the bytes as stored
	hosts := map[string]bool{}
	var order []string
	for _, b := range c.bases {
		if !hosts[b.Host] {
			order = append(order, b.Host)
		}
		hosts[b.Host] = true
	}
	other := fetch.NewHTTP().Client.Transport
	return fetch.HTTP{Client: &http.Client{Transport: &authTransport{base: tr, other: other, hosts: hosts, order: order, token: c.token}}}
}

// authTransport adds the bearer credential to requests for the client's
// servers, and sends requests for any other host through other. A GET or
// HEAD for one of its servers that cannot connect (the server that wrote
// the desired state died, and another serves the same state) is tried on
// the others in turn.
type authTransport struct {
	base, other http.RoundTripper
	hosts       map[string]bool
	order       []string // the servers, as given
	token       string
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.hosts[req.URL.Host] {
		return t.other.RoundTrip(req)
	}
	try := []string{req.URL.Host}
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		for _, h := range t.order {
			if h != req.URL.Host {
				try = append(try, h)
			}
		}
	}
	for i, host := range try {
		r := req.Clone(req.Context())
		r.URL.Host, r.Host = host, ""
		if t.token != "" && req.Header.Get("Authorization") == "" {
			r.Header.Set("Authorization", "Bearer "+t.token)
		}
		resp, err := t.base.RoundTrip(r)
		var op *net.OpError
		if err == nil || i == len(try)-1 || !errors.As(err, &op) || op.Op != "dial" || req.Context().Err() != nil {
			return resp, err
		}
	}
	panic("unreachable")
}

// WatchDesired follows this agent's desired state with blocking queries of
// up to wait each, so a change arrives within milliseconds and every
// query that times out is also a full poll. It calls fn with the first
// document and with each one that differs from the last, and fn(nil, err)
// when the server cannot be asked (then it asks again with backoff, to 30
// s), until ctx is done.
func (c *Client) WatchDesired(ctx context.Context, wait time.Duration, fn func(*desired.Doc, error)) error {
	var index uint64
	var last *desired.Doc
	failures := 0
	for ctx.Err() == nil {
		d, err := c.Desired(ctx, index, wait)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fn(nil, err)
			failures++
			fetch.Sleep(ctx, min(time.Second<<min(failures-1, 5), 30*time.Second))
			if ferry.ErrorCode(err) == ferry.EUNAUTH {
				// A revoked credential will not come back by asking fast.
				fetch.Sleep(ctx, 30*time.Second)
			}
			continue
		}
		failures = 0
		if d.Index < index {
			index = 0 // a new or restored server: start over
		} else {
			index = d.Index
		}
		if last == nil || !last.Equal(&d.Doc) {
			doc := d.Doc
			last = &doc
			fn(&doc, nil)
		}
	}
	return nil
}

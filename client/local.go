package client

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
)

// NewLocal returns a client whose requests go to h in this process rather
// than over the network: the server's own API, which its web UI calls with
// the signed-in user's token, so every page passes the same checks of
// role, scope and input as the CLI. remote is the address the server
// records for audit events (the browser's).
func NewLocal(h http.Handler, token, remote string) *Client {
	return &Client{
		bases: []*url.URL{{Scheme: "http", Host: "local"}},
		token: token,
		hc:    &http.Client{Transport: handlerTransport{h: h, remote: remote}},
	}
}

// handlerTransport answers a request by running the handler on it.
type handlerTransport struct {
	h      http.Handler
	remote string
}

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req.RemoteAddr = t.remote
	if req.Body == nil {
		req.Body = http.NoBody
	}
	rec := &recorder{header: http.Header{}}
	t.h.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return &http.Response{
		StatusCode: rec.status, Status: http.StatusText(rec.status),
		Header: rec.header, Body: io.NopCloser(&rec.body),
		ContentLength: int64(rec.body.Len()), Request: req,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}, nil
}

// recorder is the http.ResponseWriter a local call writes its answer to.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// Package client is the typed Go client of ferry's control-server API
// (package api): the CLI, ferry dev and the agent talk to the server only
// through it.
//
// Every method returns a *ferry.Error carrying the server's error kind when
// the server answered with an error, so the CLI maps it to an exit code
// (locked 3, unhealthy 4); a transport error names the server that could
// not be reached and why. Cancelling ctx returns an error wrapping ctx's.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/tlsca"
)

// callTimeout bounds a request that does not block by design, so a hung
// server cannot hang the CLI; blocking queries and uploads get their own.
const callTimeout = time.Minute

// Client calls a ferry server with one credential. It is safe for
// concurrent use. Given several servers (sharing one etcd state), it talks
// to one and moves to the next when that one cannot be reached.
type Client struct {
	bases []*url.URL
	cur   atomic.Int32 // index into bases of the server in use
	token string
	tr    *http.Transport
	hc    *http.Client
}

// New returns a client of the server at server (https://HOST:PORT; a bare
// HOST:PORT means https; several, comma-separated, for servers that share
// one state) that sends token as its bearer credential. With
// caSHA256 (hex sha256 of the CA certificate's DER bytes) it trusts only
// certificates of that CA, as agents do; without, the system roots.
// An empty token is allowed for Join, which carries its own.
func New(server, token, caSHA256 string) (*Client, error) {
	bases, err := ParseServers(server)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 15 * time.Second
	// Artifacts are named by the digest of their bytes as stored.
	tr.DisableCompression = true
	if caSHA256 != "" {
		tr.TLSClientConfig = tlsca.PinnedClient(strings.ToLower(strings.TrimSpace(caSHA256)))
	} else {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &Client{
		bases: bases,
		token: token,
		tr:    tr,
		// No Timeout: blocking queries and uploads last long; each call
		// bounds itself by its context.
		hc: &http.Client{Transport: tr},
	}, nil
}

// ParseServers reads a comma-separated list of server addresses (servers
// sharing one state), each as ParseServer does.
func ParseServers(list string) ([]*url.URL, error) {
	var out []*url.URL
	for _, one := range strings.Split(list, ",") {
		u, err := ParseServer(one)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// JoinServers is the list ParseServers reads.
func JoinServers(us []*url.URL) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = u.String()
	}
	return strings.Join(s, ",")
}

// ParseServer reads a server address: a URL, or HOST:PORT meaning https.
func ParseServer(server string) (*url.URL, error) {
	s := strings.TrimSpace(server)
	if s == "" {
		return nil, ferry.Errorf(ferry.EINVALID, "no server address")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "server address %q", server)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return nil, ferry.Errorf(ferry.EINVALID, "server address %q: use https://HOST:PORT", server)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, ferry.Errorf(ferry.EINVALID, "server address %q: use https://HOST:PORT without user, query or fragment", server)
	}
	// Every request carries a token (an agent's join token, then its
	// credential): in the clear only where it cannot leave the machine.
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return nil, ferry.Errorf(ferry.EINVALID, "server address %q: http:// is allowed only to a loopback address (tokens would cross the network in the clear); use https://", server)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// loopback reports whether host names this machine's loopback interface.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Each returns a client per server this one knows, sharing its credential
// and connections: for what any of several servers may ask an agent
// (a log request lives in the memory of the server a user asked).
func (c *Client) Each() []*Client {
	out := make([]*Client, len(c.bases))
	for i, b := range c.bases {
		out[i] = &Client{bases: []*url.URL{b}, token: c.token, tr: c.tr, hc: c.hc}
	}
	return out
}

// Server returns the base URL of the server in use, e.g.
// https://deploy.example.com:7400.
func (c *Client) Server() string { return c.base().String() }

func (c *Client) base() *url.URL { return c.bases[c.cur.Load()] }

// failover moves on from server i to the next one, unless another call
// already did.
func (c *Client) failover(i int32) {
	c.cur.CompareAndSwap(i, (i+1)%int32(len(c.bases)))
}

// call is one API request.
type call struct {
	method string
	path   string // api.Path… with its path values filled in
	query  url.Values
	body   any       // JSON-encoded when not nil and not an io.Reader
	raw    io.Reader // a body sent as is
	header http.Header
	length int64         // of raw; -1 unknown
	noAuth bool          // /v1/agent/join
	out    any           // JSON-decoded from a 2xx answer when not nil
	wait   time.Duration // how long the server may take by design, beyond callTimeout; <0: unbounded
}

// do runs cl and returns the answer's header. The body is decoded into
// cl.out; an error answer becomes a *ferry.Error of its kind.
func (c *Client) do(ctx context.Context, cl call) (http.Header, error) {
	if cl.wait >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout+cl.wait)
		defer cancel()
	}
	var payload []byte
	if cl.body != nil {
		b, err := json.Marshal(cl.body)
		if err != nil {
			return nil, fmt.Errorf("client: encode %s %s: %w", cl.method, cl.path, err)
		}
		payload = b
	}
	for tries := 1; ; tries++ {
		i := c.cur.Load()
		h, got, err := c.try(ctx, cl, c.bases[i], payload)
		// Another server is asked when this one gave no answer: it could
		// not be reached at all, or the connection was lost and the
		// request is safe to repeat. A raw body (an upload) cannot be
		// sent twice.
		retry := got == noConn || (got == connLost && (cl.method == http.MethodGet || cl.method == http.MethodHead))
		if err == nil || ctx.Err() != nil || tries >= len(c.bases) || cl.raw != nil || !retry {
			return h, err
		}
		c.failover(i)
	}
}

// What became of one try.
type outcome int

const (
	answered outcome = iota // the server answered, error or not
	noConn                  // no connection could be made: the request was not sent
	connLost                // sent, but no answer came
)

// try sends cl to the server at base.
func (c *Client) try(ctx context.Context, cl call, base *url.URL, payload []byte) (http.Header, outcome, error) {
	u := *base
	u.Path = strings.TrimRight(base.Path, "/") + cl.path
	u.RawQuery = cl.query.Encode()
	body := cl.raw
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u.String(), body)
	if err != nil {
		return nil, answered, fmt.Errorf("client: %s %s: %w", cl.method, cl.path, err)
	}
	if cl.raw != nil {
		req.ContentLength = cl.length
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "ferry")
	req.Header.Set("Accept", "application/json")
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !cl.noAuth && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		got := connLost
		if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
			got = noConn
		}
		return nil, got, c.transportError(base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return resp.Header, answered, c.answerError(base, cl, resp)
	}
	if cl.out != nil && cl.method != http.MethodHead && resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(cl.out); err != nil {
			if ctx.Err() != nil {
				return nil, answered, ctx.Err()
			}
			return nil, answered, fmt.Errorf("ferry server %s: %s %s: unreadable answer: %w", base.Host, cl.method, cl.path, err)
		}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
	return resp.Header, answered, nil
}

// transportError says which server could not be reached and why, with a
// hint for the mistake that is most likely behind a certificate error.
func (c *Client) transportError(base *url.URL, err error) error {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return ferry.WrapError(ferry.ETRANSPORT, err, "ferry server %s did not answer in time", base)
	case errors.As(err, &ua):
		// Not a transport failure: retrying will not help.
		return ferry.WrapError(ferry.EINVALID, err, "cannot reach ferry server %s: its certificate is not signed by a trusted CA; "+
			"pass the server CA's fingerprint with --ca-sha256 (FERRY_CA_SHA256)", base)
	case errors.As(err, &hn):
		return ferry.WrapError(ferry.EINVALID, err, "cannot reach ferry server %s: its certificate is for another name", base)
	}
	return ferry.WrapError(ferry.ETRANSPORT, unwrapURL(err), "cannot reach ferry server %s", base)
}

// unwrapURL drops *url.Error's `Get "https://…":` prefix, already said.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// answerError turns an error answer into a *ferry.Error: the server's code
// and message, or, from something that is not a ferry server (a proxy), a
// kind that follows from the status.
func (c *Client) answerError(base *url.URL, cl call, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb api.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		msg := eb.Error.Message
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &ferry.Error{Code: eb.Error.Code, Message: msg}
	}
	text := strings.TrimSpace(string(b))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	if text == "" {
		text = http.StatusText(resp.StatusCode)
	}
	kind := api.ErrorKind(resp.StatusCode)
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		// A proxy or load balancer that could not reach a ferry server.
		kind = ferry.ETRANSPORT
	}
	return ferry.Errorf(kind, "ferry server %s: %s %s: %s: %s", base.Host, cl.method, cl.path, resp.Status, text)
}

// path fills api path template p's {name} values, escaped, in order.
func path(p string, values ...string) string {
	for _, v := range values {
		i := strings.IndexByte(p, '{')
		j := strings.IndexByte(p, '}')
		if i < 0 || j < i {
			panic("client: too many path values for " + p)
		}
		p = p[:i] + url.PathEscape(v) + p[j+1:]
	}
	return p
}

// blockingQuery is the ?index=&wait= of a blocking GET.
func blockingQuery(index uint64, wait time.Duration) url.Values {
	q := url.Values{}
	if index > 0 {
		q.Set("index", strconv.FormatUint(index, 10))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	return q
}

// indexOf reads api.IndexHeader; 0 when absent.
func indexOf(h http.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(api.IndexHeader), 10, 64)
	return n
}

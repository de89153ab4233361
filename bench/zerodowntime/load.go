package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/internal/websocket"
)

// Outcome classes. Every request ends in exactly one.
const (
	classOK      = "ok"
	classRefused = "refused" // connect(2) got ECONNREFUSED: nothing listened
	classReset   = "reset"   // ECONNRESET or EPIPE: a listener or conn closed under us
	classEOF     = "eof"     // the server closed the conn before a whole answer
	classTimeout = "timeout" // no answer within the request timeout
	class5xx     = "5xx"     // an answer, but a server error (a proxy's 502/503 too)
	classOther   = "other"   // anything else, 4xx included; see the samples
)

var classes = []string{classOK, classRefused, classReset, classEOF, classTimeout, class5xx, classOther}

// classify maps one request's result to its class. net/http wraps the
// syscall errors, and sometimes flattens them to text, so both are checked.
func classify(status int, err error) string {
	if err == nil {
		switch {
		case status >= 200 && status < 400:
			return classOK
		case status >= 500:
			return class5xx
		}
		return classOther
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return classRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return classReset
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return classTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return classEOF
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "connection refused"):
		return classRefused
	case strings.Contains(s, "connection reset"), strings.Contains(s, "broken pipe"):
		return classReset
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline exceeded"):
		return classTimeout
	case strings.Contains(s, "EOF"), strings.Contains(s, "server closed idle connection"):
		return classEOF
	}
	return classOther
}

// Client names, in report order.
const (
	cliGetKA   = "get-keepalive"
	cliPostKA  = "post-keepalive"
	cliGetNew  = "get-newconn"
	cliH2CPost = "h2c-post"
	cliSlow    = "slow-get"
	cliRawTCP  = "raw-tcp"
	cliWS      = "websocket"
)

var clientNames = []string{cliGetKA, cliPostKA, cliGetNew, cliH2CPost, cliSlow, cliRawTCP, cliWS}

// wsPace is the pause between the WebSocket client's messages.
const wsPace = 5 * time.Millisecond

// postBody is what the POST clients send; hello answers POST / with its length.
var postBody = bytes.Repeat([]byte("ferry"), 100)

// loadConfig is the load one subject gets.
type loadConfig struct {
	Addr        string        // host:port every client talks to
	Rate        float64       // open-loop requests per second, spread over the clients
	Workers     int           // closed-loop workers (back to back, round-robin over the fast clients)
	SlowWorkers int           // closed-loop workers on GET /slow?ms=SlowMS
	SlowMS      int           // how long a slow request lasts; longer than an upgrade
	Timeout     time.Duration // per request, on top of SlowMS for slow requests
}

// clientStats is one client's tally.
type clientStats struct {
	Supported   bool           `json:"supported"`
	Unsupported string         `json:"unsupported,omitempty"` // why the preflight rejected it
	Requests    int            `json:"requests"`
	Classes     map[string]int `json:"classes"`
	Versions    map[string]int `json:"versions"` // X-Release of the ok answers
	Retries     int            `json:"retries"`  // requests that took more than one connection (Go's client retried)
	// The open loop's share: its failure rate is the fraction of
	// requests an upgrade costs. Closed-loop workers spin fast on a
	// refused connect, so their counts inflate a total during an outage.
	OpenRequests int                 `json:"open_requests"`
	OpenFailed   int                 `json:"open_failed"`
	Samples      map[string][]string `json:"samples,omitempty"`
	P50MS        float64             `json:"p50_ms"`
	P99MS        float64             `json:"p99_ms"`
	MaxMS        float64             `json:"max_ms"`
	FailuresAt   []float64           `json:"failures_at_s,omitempty"` // seconds since load start, first 200
	lat          []float64
}

func (c *clientStats) failures() int { return c.Requests - c.Classes[classOK] }

// load runs the clients until stop is called, then returns their tallies.
type load struct {
	cfg     loadConfig
	start   time.Time
	clients map[string]*client
	mu      sync.Mutex
	stats   map[string]*clientStats
	backlog atomic.Int64 // open-loop sends skipped: too many in flight
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// client sends one kind of request.
type client struct {
	name string
	do   func(ctx context.Context) (status int, version string, attempts int, err error)
	idle func()
}

func newClients(cfg loadConfig) map[string]*client {
	base := "http://" + cfg.Addr
	ka := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}
	kaPost := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}
	newConn := &http.Transport{DisableKeepAlives: true}
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true) // h2c with prior knowledge, and nothing else
	h2t := &http.Transport{Protocols: &h2}
	slowT := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}

	httpDo := func(t *http.Transport, method, path string) func(context.Context) (int, string, int, error) {
		hc := &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		return func(ctx context.Context) (int, string, int, error) {
			// Attempts are counted by GotConn: one per connection a try
			// used (GetConn fires twice per request on a reused h2 conn).
			var got atomic.Int32
			ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { got.Add(1) }})
			attempts := func() int { return int(got.Load()) }
			var body io.Reader
			if method == http.MethodPost {
				body = bytes.NewReader(postBody)
			}
			req, err := http.NewRequestWithContext(ctx, method, base+path, body)
			if err != nil {
				return 0, "", 0, err
			}
			if method == http.MethodPost && t != h2t {
				// No retries: net/http retries a failed HTTP/1 request on
				// a reused conn only when it can replay the body (GetBody)
				// and the method is idempotent or an Idempotency-Key is
				// set. A POST with GetBody nil is never replayed; attempts
				// proves it.
				//
				// The HTTP/2 POST keeps its GetBody: over HTTP/2 the
				// transport replays a request only when the server proved
				// it never processed it (a GOAWAY whose last stream is
				// below the request's, or REFUSED_STREAM), whatever the
				// method, as browsers do. That is how a draining HTTP/2
				// server hands its clients over, and what a GOAWAY is for.
				req.Body = io.NopCloser(bytes.NewReader(postBody))
				req.GetBody = nil
				req.ContentLength = int64(len(postBody))
			}
			resp, err := hc.Do(req)
			if err != nil {
				return 0, "", attempts(), err
			}
			defer resp.Body.Close()
			_, err = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode, resp.Header.Get("X-Release"), attempts(), err
		}
	}
	cs := map[string]*client{
		cliGetKA:   {do: httpDo(ka, http.MethodGet, "/"), idle: ka.CloseIdleConnections},
		cliPostKA:  {do: httpDo(kaPost, http.MethodPost, "/"), idle: kaPost.CloseIdleConnections},
		cliGetNew:  {do: httpDo(newConn, http.MethodGet, "/"), idle: newConn.CloseIdleConnections},
		cliH2CPost: {do: httpDo(h2t, http.MethodPost, "/"), idle: h2t.CloseIdleConnections},
		cliSlow:    {do: httpDo(slowT, http.MethodGet, fmt.Sprintf("/slow?ms=%d", cfg.SlowMS)), idle: slowT.CloseIdleConnections},
		cliRawTCP:  {do: rawDo(cfg.Addr), idle: func() {}},
	}
	cs[cliWS] = wsClient(cfg.Addr)
	for n, c := range cs {
		c.name = n
	}
	return cs
}

// rawDo is the raw TCP client: connect, send one line-based request (a
// minimal HTTP/1.0 one, since the app speaks HTTP), read the reply to EOF.
func rawDo(addr string) func(context.Context) (int, string, int, error) {
	return func(ctx context.Context) (int, string, int, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, "", 1, err
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			c.SetDeadline(dl)
		}
		if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			return 0, "", 1, err
		}
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, "", 1, err
		}
		var proto string
		var status int
		if _, err := fmt.Sscanf(line, "%s %d", &proto, &status); err != nil {
			return 0, "", 1, fmt.Errorf("raw: bad status line %q", line)
		}
		h, err := textproto.NewReader(r).ReadMIMEHeader()
		if err != nil {
			return status, "", 1, err
		}
		_, err = io.Copy(io.Discard, r)
		return status, h.Get("X-Release"), 1, err
	}
}

// wsClient keeps one WebSocket to /ws open and sends one numbered message
// per request, expecting "<release> <message>" back. A server going away
// says so with a close frame, 1001 (going away: hello's own) or 1012
// (service restart: ferry's proxy, when it must end one the app did not
// close): the client then reconnects and resends (a retry, as the message
// was never answered). Any other close code is a failure. A connection lost without
// a close frame is a failure, as it would be for a browser's WebSocket.
func wsClient(addr string) *client {
	var (
		mu sync.Mutex
		c  *websocket.Conn
		n  int
	)
	drop := func() {
		if c != nil {
			c.CloseNow()
			c = nil
		}
	}
	do := func(ctx context.Context) (int, string, int, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts := 1
		for {
			if c == nil {
				nc, err := websocket.Dial(ctx, "ws://"+addr+"/ws")
				if err != nil {
					return 0, "", attempts, err
				}
				c = nc
			}
			n++
			msg := strconv.Itoa(n)
			if dl, ok := ctx.Deadline(); ok {
				c.NetConn().SetDeadline(dl)
			}
			err := c.Write([]byte(msg))
			var reply []byte
			if err == nil {
				reply, err = c.Read()
			}
			if err == nil {
				release, echoed, _ := strings.Cut(string(reply), " ")
				if echoed != msg {
					drop()
					return 0, "", attempts, fmt.Errorf("websocket: sent %q, got %q back", msg, reply)
				}
				return http.StatusOK, release, attempts, nil
			}
			drop()
			var ce *websocket.CloseError
			if errors.As(err, &ce) && (ce.Code == websocket.CloseGoingAway || ce.Code == websocket.CloseServiceRestart) && attempts < 3 {
				attempts++
				continue
			}
			return 0, "", attempts, err
		}
	}
	idle := func() {
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			c.Close(websocket.CloseNormal, "")
		}
		drop()
	}
	return &client{do: do, idle: idle}
}

// preflight finds the clients the target supports: each gets three tries
// to answer ok. The slow client must also really take SlowMS.
func preflight(ctx context.Context, cfg loadConfig, cs map[string]*client) map[string]string {
	out := map[string]string{}
	for _, name := range clientNames {
		c := cs[name]
		why := ""
		for try := 0; try < 3; try++ {
			rctx, cancel := context.WithTimeout(ctx, cfg.Timeout+time.Duration(cfg.SlowMS)*time.Millisecond)
			t0 := time.Now()
			status, _, _, err := c.do(rctx)
			took := time.Since(t0)
			cancel()
			switch {
			case err != nil:
				why = "error: " + err.Error()
			case classify(status, nil) != classOK:
				why = fmt.Sprintf("status %d", status)
			case name == cliSlow && took < time.Duration(cfg.SlowMS)*time.Millisecond*9/10:
				why = fmt.Sprintf("/slow?ms=%d answered in %v: the app has no /slow endpoint", cfg.SlowMS, took.Round(time.Millisecond))
			default:
				why = ""
			}
			if why == "" || ctx.Err() != nil {
				break
			}
		}
		out[name] = why
	}
	return out
}

// newLoad is a load with its clients and empty tallies, sending nothing.
func newLoad(cfg loadConfig) *load {
	l := &load{cfg: cfg, clients: newClients(cfg), stats: map[string]*clientStats{}, start: time.Now(), cancel: func() {}}
	for _, n := range clientNames {
		l.stats[n] = &clientStats{Supported: true, Classes: map[string]int{}, Versions: map[string]int{}, Samples: map[string][]string{}}
	}
	return l
}

// startLoad preflights the clients and starts the open- and closed-loop
// senders.
func startLoad(ctx context.Context, cfg loadConfig) *load {
	l := newLoad(cfg)
	unsupported := preflight(ctx, cfg, l.clients)
	var fast []string
	for _, n := range clientNames {
		st := l.stats[n]
		st.Supported = unsupported[n] == ""
		st.Unsupported = unsupported[n]
		if st.Supported && n != cliSlow && n != cliWS {
			fast = append(fast, n)
		}
	}
	ctx, l.cancel = context.WithCancel(ctx)
	l.start = time.Now()
	if len(fast) == 0 {
		return l
	}
	// Open loop: sends at a constant rate whatever the answers do, so a
	// stall shows up as timeouts instead of a slower sender.
	if cfg.Rate > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var inflight atomic.Int64
			var sends sync.WaitGroup
			defer sends.Wait()
			interval := time.Duration(float64(time.Second) / cfg.Rate)
			next := time.Now()
			for i := 0; ; i++ {
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				} else if ctx.Err() != nil {
					return
				}
				if inflight.Load() > 4096 {
					l.backlog.Add(1)
					continue
				}
				inflight.Add(1)
				sends.Add(1)
				name := fast[i%len(fast)]
				go func() {
					defer sends.Done()
					defer inflight.Add(-1)
					l.one(name, true)
				}()
			}
		}()
	}
	worker := func(names []string, k int) {
		defer l.wg.Done()
		for i := k; ctx.Err() == nil; i++ {
			l.one(names[i%len(names)], false)
		}
	}
	for k := 0; k < cfg.Workers; k++ {
		l.wg.Add(1)
		go worker(fast, k)
	}
	if l.stats[cliWS].Supported {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				l.one(cliWS, false)
				time.Sleep(wsPace)
			}
		}()
	}
	if l.stats[cliSlow].Supported {
		for k := 0; k < cfg.SlowWorkers; k++ {
			l.wg.Add(1)
			go worker([]string{cliSlow}, 0)
		}
	}
	return l
}

// one sends one request of client name and records it. Requests are not
// cancelled by stop: each runs to its own timeout, so stopping the load
// never manufactures failures.
func (l *load) one(name string, open bool) {
	timeout := l.cfg.Timeout
	if name == cliSlow {
		timeout += time.Duration(l.cfg.SlowMS) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t0 := time.Now()
	status, version, attempts, err := l.clients[name].do(ctx)
	took := time.Since(t0)
	class := classify(status, err)
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stats[name]
	st.Requests++
	st.Classes[class]++
	if open {
		st.OpenRequests++
		if class != classOK {
			st.OpenFailed++
		}
	}
	if attempts > 1 {
		st.Retries++
	}
	if class == classOK {
		st.Versions[version]++
		st.lat = append(st.lat, float64(took.Microseconds())/1000)
		return
	}
	if len(st.FailuresAt) < 200 {
		st.FailuresAt = append(st.FailuresAt, t0.Sub(l.start).Round(time.Millisecond).Seconds())
	}
	msg := fmt.Sprintf("status %d", status)
	if err != nil {
		msg = err.Error()
	}
	if s := st.Samples[class]; len(s) < 3 && !slices.Contains(s, msg) {
		st.Samples[class] = append(s, msg)
	}
}

// stop ends the senders, waits for every request in flight and returns
// the tallies with their latency percentiles.
func (l *load) stop() (map[string]*clientStats, int64) {
	l.cancel()
	l.wg.Wait()
	for _, c := range l.clients {
		c.idle()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, st := range l.stats {
		st.P50MS, st.P99MS, st.MaxMS = percentiles(st.lat)
	}
	return l.stats, l.backlog.Load()
}

func percentiles(ms []float64) (p50, p99, max float64) {
	if len(ms) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

// spacing is the random pause between upgrades.
func spacing(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// logPickup is how long a host's agent has to pick up a log request
// before the client is told it did not answer.
const logPickup = 10 * time.Second

// logHub passes log requests from clients to the agents that long-poll
// this server for them, and the agents' lines back. It lives in memory:
// with several servers, an agent long-polls each server it was given
// (--server a,b), so a request to any of them reaches it; an agent given
// one address (say, a load balancer's) answers only the server behind it
// that it reached.
type logHub struct {
	mu      sync.Mutex
	pending map[string][]*logSession // host → not yet picked up
	wake    map[string]chan struct{} // host → closed when a request is queued
	byID    map[string]*logSession
}

// logSession is one host's part of one client's request.
type logSession struct {
	req    api.LogRequest
	host   string
	lines  chan<- api.LogLine // the client's
	gone   <-chan struct{}    // the client went away
	picked chan struct{}      // closed when the agent took it
	ended  chan struct{}      // closed when the agent's stream ended
	once   sync.Once
}

func (s *logSession) end() { s.once.Do(func() { close(s.ended) }) }

func newLogHub() *logHub {
	return &logHub{pending: map[string][]*logSession{}, wake: map[string]chan struct{}{}, byID: map[string]*logSession{}}
}

func (h *logHub) add(sess *logSession) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pending[sess.host] = append(h.pending[sess.host], sess)
	h.byID[sess.req.ID] = sess
	if ch, ok := h.wake[sess.host]; ok {
		close(ch)
		delete(h.wake, sess.host)
	}
}

func (h *logHub) remove(sess *logSession) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.byID, sess.req.ID)
	h.pending[sess.host] = slices.DeleteFunc(h.pending[sess.host], func(o *logSession) bool { return o == sess })
	if len(h.pending[sess.host]) == 0 {
		delete(h.pending, sess.host)
	}
}

// take returns host's pending requests, waiting up to wait for one.
func (h *logHub) take(ctx context.Context, host string, wait time.Duration) []api.LogRequest {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		h.mu.Lock()
		if ss := h.pending[host]; len(ss) > 0 {
			delete(h.pending, host)
			h.mu.Unlock()
			reqs := make([]api.LogRequest, 0, len(ss))
			for _, s := range ss {
				close(s.picked)
				reqs = append(reqs, s.req)
			}
			return reqs
		}
		ch, ok := h.wake[host]
		if !ok {
			ch = make(chan struct{})
			h.wake[host] = ch
		}
		h.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return []api.LogRequest{}
		case <-ctx.Done():
			return []api.LogRequest{}
		}
	}
}

func (h *logHub) get(id string) *logSession {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byID[id]
}

// logs streams the log lines of an app's processes from the hosts that
// run it, as NDJSON: the last ?lines=N (default 100) of each instance,
// only those of the last ?since=D, and with ?follow=1 new ones until the
// client goes away or its token ends (revoked, expired), which a last
// line, an api.ErrorBody, says.
func (s *Server) logs(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx, release := s.revoker.hold(r.Context(), p)
	defer release()
	q := r.URL.Query()
	req := api.LogRequest{App: q.Get("app"), Process: q.Get("process"), Lines: 100, Follow: q.Get("follow") == "1" || q.Get("follow") == "true",
		Hooks: q.Get("hooks") == "1" || q.Get("hooks") == "true"}
	if err := ferry.CheckAppName(req.App); err != nil {
		return ferry.WrapError(ferry.EINVALID, err, "logs: app")
	}
	if req.Process != "" {
		if err := ferry.CheckProcessName(req.Process); err != nil {
			return ferry.WrapError(ferry.EINVALID, err, "logs: process")
		}
	}
	if v := q.Get("lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < -1 {
			return ferry.Errorf(ferry.EINVALID, "logs: lines %q: a number of lines, -1 for all", v)
		}
		req.Lines = n
	}
	if v := q.Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return ferry.Errorf(ferry.EINVALID, "logs: since %q: a duration such as 10m", v)
		}
		req.Since = d
	}
	hosts, err := s.hostsRunning(ctx, req.App, q.Get("host"))
	if err != nil {
		return err
	}
	var allowed []string
	for host, groups := range hosts {
		ok := len(p.Groups) == 0 && p.allowed(req.App, "")
		for _, g := range groups {
			ok = ok || (g != "" && p.allowed(req.App, g))
		}
		if ok {
			allowed = append(allowed, host)
		}
	}
	if len(allowed) == 0 {
		if err := p.scopeApp(req.App); err != nil {
			return err
		}
		if h := q.Get("host"); h != "" {
			return ferry.Errorf(ferry.ENOTFOUND, "logs: host %s does not run %s (or your token may not see its group)", h, req.App)
		}
		return ferry.Errorf(ferry.ENOTFOUND, "logs: no host runs %s (that your token may see)", req.App)
	}
	slices.Sort(allowed)
	lines := make(chan api.LogLine, 256)
	ended := make(chan *logSession, len(allowed))
	var sessions []*logSession
	for _, host := range allowed {
		rq := req
		rq.ID = randomHex(12)
		sess := &logSession{req: rq, host: host, lines: lines, gone: ctx.Done(), picked: make(chan struct{}), ended: make(chan struct{})}
		sessions = append(sessions, sess)
		s.logHub.add(sess)
		defer s.logHub.remove(sess)
		// Each session ends when its agent's stream does, or, never picked
		// up within logPickup, with a line saying so.
		go func() {
			defer func() { ended <- sess }()
			pickup := time.NewTimer(logPickup)
			defer pickup.Stop()
			select {
			case <-sess.picked:
			case <-pickup.C:
				select {
				case <-sess.picked: // just now
				default:
					select {
					case lines <- api.LogLine{Host: host, Error: "its agent did not answer within " + logPickup.String() + " (is it running, and connected to this server?)"}:
					case <-ctx.Done():
					}
					return
				}
			case <-ctx.Done():
				return
			}
			select {
			case <-sess.ended:
			case <-ctx.Done():
			}
		}()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	enc := json.NewEncoder(w)
	for left := len(sessions); left > 0; {
		select {
		case l := <-lines:
			if err := enc.Encode(l); err != nil {
				return nil
			}
			rc.Flush()
		case <-ended:
			left--
		case <-ctx.Done():
			if r.Context().Err() == nil {
				// The token ended, not the request: say so in the
				// stream, as an error answer would.
				var eb api.ErrorBody
				err := context.Cause(ctx)
				eb.Error.Code, eb.Error.Message = ferry.ErrorCode(err), err.Error()
				enc.Encode(eb)
				rc.Flush()
			}
			return nil
		}
	}
	// Lines sent just before their session ended.
	for {
		select {
		case l := <-lines:
			enc.Encode(l)
		default:
			rc.Flush()
			return nil
		}
	}
}

// hostsRunning maps the hosts whose agents report app (only host, when
// given) to the group they run it for, or, when the report does not say,
// the groups the host is in.
func (s *Server) hostsRunning(ctx context.Context, app, only string) (map[string][]string, error) {
	reps, _, err := s.repo.Reports(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, rep := range reps {
		a, ok := rep.State.Apps[app]
		host := rep.State.Host
		if !ok || (only != "" && host != only) {
			continue
		}
		if a.Spec != nil && a.Spec.Group != "" {
			out[host] = []string{a.Spec.Group}
			continue
		}
		h, _, err := s.repo.Host(ctx, host)
		if err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
			return nil, err
		}
		out[host] = h.Groups
	}
	return out, nil
}

// agentLogRequests answers an agent's long poll for the log requests meant
// for its host.
func (s *Server) agentLogRequests(w http.ResponseWriter, r *http.Request, p *principal) error {
	_, wait, err := blockingParams(r, time.Minute, 5*time.Minute)
	if err != nil {
		return err
	}
	ctx, release := s.revoker.hold(r.Context(), p)
	defer release()
	reqs := s.logHub.take(ctx, p.Host, wait)
	if ctx.Err() != nil {
		return endedWhy(r, ctx)
	}
	return writeJSON(w, http.StatusOK, reqs)
}

// agentLogData passes an agent's stream of lines to the client that asked
// for them, until the stream ends, the client goes away or the agent's
// credential ends. Then it answers at once, while the agent may still be
// sending (204, or 401 for the credential), which tells the agent to stop
// tailing.
func (s *Server) agentLogData(w http.ResponseWriter, r *http.Request, p *principal) error {
	sess := s.logHub.get(r.PathValue("id"))
	if sess == nil || sess.host != p.Host {
		return ferry.Errorf(ferry.ENOTFOUND, "no log request %s for host %s (the client went away)", r.PathValue("id"), p.Host)
	}
	defer sess.end()
	streamBody(r, 0) // lines come when the app writes them: a quiet app is no stalled client
	ctx, release := s.revoker.hold(r.Context(), p)
	defer release()
	// The agent stops when it is answered, so the answer must go out
	// while its body still comes. Without full duplex (or Connection:
	// close), net/http's HTTP/1 server reads up to 256 KB more of a body
	// the handler left unread before it sends the answer, and a quiet
	// log may take hours to send that much. (HTTP/2 is always full
	// duplex.)
	rc := http.NewResponseController(w)
	rc.EnableFullDuplex()
	lines := make(chan api.LogLine)
	read := make(chan error, 1)
	stop := make(chan struct{})
	go func() { read <- readLogLines(r.Body, lines, stop) }()
	// answer answers err (nil: 204), while the agent may still be
	// sending, and makes sure the reader stopped.
	reading, ended := true, false // the reader runs; the body ended
	answer := func(err error) error {
		if !ended && r.ProtoMajor == 1 {
			// Else, after the handler, net/http would read on looking
			// for the body's end, to reuse a connection whose body has
			// not ended.
			w.Header().Set("Connection", "close")
		}
		switch {
		case r.Context().Err() != nil: // nobody to answer
		case err != nil:
			s.writeError(w, r, err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
		rc.Flush()
		if reading {
			close(stop)
			if rc.SetReadDeadline(time.Now()) == nil { // unblocks the reader's Read
				<-read
			}
		}
		return nil
	}
	// credEnded answers the end of the agent's credential to the agent,
	// and tells the reader why this host's lines stop.
	credEnded := func() error {
		err := endedWhy(r, ctx)
		cut := r.Context().Err() == nil // before answer's deadline ends r's context too
		answer(err)
		if cut {
			select {
			case sess.lines <- api.LogLine{Host: p.Host, Error: err.Error()}:
			case <-sess.gone:
			}
		}
		return nil
	}
	for {
		select {
		case l := <-lines:
			l.Host = p.Host
			select {
			case sess.lines <- l:
			case <-sess.gone:
				return answer(nil)
			case <-ctx.Done():
				return credEnded()
			}
		case err := <-read:
			reading, ended = false, err == nil
			if ferry.ErrorCode(err) == ferry.EINVALID {
				return answer(err)
			}
			// The stream ended, or broke (then nobody hears the answer).
			return answer(nil)
		case <-sess.gone:
			return answer(nil)
		case <-ctx.Done():
			return credEnded()
		}
	}
}

// readLogLines sends the NDJSON lines of body to lines until the body
// ends (nil), a line is malformed, reading fails or stop is closed.
func readLogLines(body io.Reader, lines chan<- api.LogLine, stop <-chan struct{}) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l api.LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return ferry.WrapError(ferry.EINVALID, err, "log line")
		}
		select {
		case lines <- l:
		case <-stop:
			return nil
		}
	}
	return sc.Err()
}

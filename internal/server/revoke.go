package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
)

// revoker ends the long requests of a credential that stops being valid:
// log streams, agents' blocking desired-state queries, their log
// long-polls and log uploads. Authentication happens once, when a request
// starts; without this, a request started with a token that is revoked,
// expires or is deleted (a host's credential, when the host joins again
// or is removed) would go on for as long as it lasts.
//
// It learns of revocations from one watch of the tokens prefix (a mirror),
// not from re-reading the token on each wake: a revoke on another server
// sharing the state store arrives within the watch's delay, at the cost of
// one watch per server, while a log stream has no wake to re-read at and
// a thousand agents' queries re-reading every few seconds would load the
// store for nothing. A blocking query also re-checks its credential right
// before it answers (recheck), so a watch that lags cannot let a secret
// out.
type revoker struct {
	st     state.Store
	tokens *mirror // every token record

	mu   sync.Mutex
	held map[string]*heldToken // token id → its long requests in flight
}

// heldToken is one token's long requests, and the goroutine that watches
// the token for them.
type heldToken struct {
	reqs map[*int]context.CancelCauseFunc // by a pointer unique to each request
	stop context.CancelFunc               // ends the token's watch
}

func newRevoker(st state.Store) *revoker {
	return &revoker{st: st, tokens: newMirror(st, prefixTokens), held: map[string]*heldToken{}}
}

// run keeps the token mirror until ctx ends.
func (rv *revoker) run(ctx context.Context, onErr func(error)) { rv.tokens.run(ctx, onErr) }

// hold returns a context of a long request of p's credential that is
// cancelled, with an EUNAUTH error saying why as its cause, when the
// credential is revoked, deleted or expires; release must be called when
// the request ends.
func (rv *revoker) hold(ctx context.Context, p *principal) (_ context.Context, release func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	var expiry *time.Timer
	if !p.Expires.IsZero() {
		name, at := p.Name, p.Expires
		expiry = time.AfterFunc(time.Until(at), func() { cancel(errExpired(name, at)) })
	}
	key := new(int)
	rv.mu.Lock()
	h, ok := rv.held[p.ID]
	if !ok {
		wctx, stop := context.WithCancel(context.Background())
		h = &heldToken{reqs: map[*int]context.CancelCauseFunc{}, stop: stop}
		rv.held[p.ID] = h
		go rv.watch(wctx, p.ID, p.Name)
	}
	h.reqs[key] = cancel
	rv.mu.Unlock()
	return ctx, func() {
		if expiry != nil {
			expiry.Stop()
		}
		cancel(nil)
		rv.mu.Lock()
		defer rv.mu.Unlock()
		delete(h.reqs, key)
		if len(h.reqs) == 0 && rv.held[p.ID] == h {
			delete(rv.held, p.ID)
			h.stop()
		}
	}
}

// end cancels the long requests of token id with cause.
func (rv *revoker) end(id string, cause error) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	h, ok := rv.held[id]
	if !ok {
		return
	}
	for _, cancel := range h.reqs {
		cancel(cause)
	}
}

// watch ends token id's requests when the mirror shows it revoked or
// gone, until ctx ends.
func (rv *revoker) watch(ctx context.Context, id, name string) {
	key := prefixTokens + id
	for {
		val, synced, changed := rv.tokens.next(key)
		var again <-chan time.Time // when the store could not say
		if synced {
			switch err := rv.judge(ctx, key, name, val); {
			case err == errUnsure:
				again = time.After(time.Second)
			case err != nil:
				rv.end(id, err)
			}
		}
		select {
		case <-changed:
		case <-again:
		case <-ctx.Done():
			return
		}
	}
}

// errUnsure is judge's answer when the store could not tell.
var errUnsure = errors.New("unsure")

// judge says why the token stored at key (val, as the mirror has it; nil
// when the mirror has none) is no longer valid, nil when it is, errUnsure
// when the store cannot say now.
func (rv *revoker) judge(ctx context.Context, key, name string, val []byte) error {
	if val == nil {
		// Missing from a mirror that may lag behind the store: a token
		// made a moment ago may not have reached it yet (the mirror's
		// change wakes watch again). Only the store can say it is gone.
		_, err := rv.st.Get(ctx, key)
		switch ferry.ErrorCode(err) {
		case "":
			return nil
		case ferry.ENOTFOUND:
			return ferry.Errorf(ferry.EUNAUTH, "token %s no longer exists (a host's credential ends when the host joins again or is removed)", name)
		}
		return errUnsure
	}
	var rec tokenRecord
	if json.Unmarshal(val, &rec) != nil {
		return nil // not for this to judge: authentication will say
	}
	if rec.Revoked {
		return errRevoked(rec.Name)
	}
	return nil
}

func errRevoked(name string) error { return ferry.Errorf(ferry.EUNAUTH, "token %s was revoked", name) }

func errExpired(name string, at time.Time) error {
	return ferry.Errorf(ferry.EUNAUTH, "token %s expired at %s", name, at.Format(time.RFC3339))
}

// next returns key's value (nil when missing), whether the mirror is in
// sync, and a channel closed at the key's next change.
func (m *mirror) next(key string) ([]byte, bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	val, _, synced := m.getLocked(key)
	c, ok := m.changed[key]
	if !ok {
		c = make(chan struct{})
		m.changed[key] = c
	}
	return val, synced, c
}

// endedWhy is the error of a long request whose held ctx ended: the
// request's own end (the client went away, the server stops), which
// writeError answers with nothing, or the credential's, which it answers
// with 401.
func endedWhy(r *http.Request, ctx context.Context) error {
	if err := r.Context().Err(); err != nil {
		return err
	}
	return context.Cause(ctx)
}

// recheck authenticates r again, right before a long request answers with
// what only a valid credential may see: the request may have waited for
// minutes since it was authenticated, and the revoker's watch may lag
// behind a revoke on another server.
func (s *Server) recheck(ctx context.Context, r *http.Request) error {
	_, err := s.authenticate(ctx, r)
	return err
}

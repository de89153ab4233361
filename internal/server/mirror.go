package server

import (
	"context"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry/internal/state"
)

// mirror keeps every key under a prefix in memory, fed by one watch, so
// that a thousand agents' blocking queries cost one watch on the state
// store, not a read and a watch each. Answers may lag the store by the
// watch's delay; a blocking query's index makes that harmless (the agent
// asks again from the index it got).
type mirror struct {
	st     state.Store
	prefix string

	mu      sync.Mutex
	kvs     map[string]state.KV
	synced  bool                     // kvs reflects a listing and its watch
	rev     int64                    // the store revision kvs reflects
	changed map[string]chan struct{} // closed when the key changes
}

func newMirror(st state.Store, prefix string) *mirror {
	return &mirror{st: st, prefix: prefix, kvs: map[string]state.KV{}, changed: map[string]chan struct{}{}}
}

// run lists and watches until ctx ends, listing again when a watch breaks.
func (m *mirror) run(ctx context.Context, onErr func(error)) {
	failed := func(err error) {
		m.setSynced(false)
		if ctx.Err() == nil {
			onErr(err)
			sleep(ctx, time.Second)
		}
	}
	for ctx.Err() == nil {
		kvs, rev, err := m.st.List(ctx, m.prefix)
		if err != nil {
			failed(err)
			continue
		}
		m.reset(kvs, rev)
		w, err := m.st.Watch(ctx, m.prefix, rev)
		if err != nil {
			failed(err)
			continue
		}
		for ev := range w.C {
			m.apply(ev)
		}
		m.setSynced(false)
		if err := w.Err(); err != nil && ctx.Err() == nil {
			onErr(err)
		}
	}
}

func (m *mirror) reset(kvs []state.KV, rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev = rev
	old := m.kvs
	m.kvs = make(map[string]state.KV, len(kvs))
	for _, kv := range kvs {
		m.kvs[kv.Key] = kv
	}
	for k, kv := range old {
		if cur, ok := m.kvs[k]; !ok || cur.Rev != kv.Rev {
			m.notifyLocked(k)
		}
	}
	for k := range m.kvs {
		if _, ok := old[k]; !ok {
			m.notifyLocked(k)
		}
	}
	m.synced = true
}

func (m *mirror) apply(ev state.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev = max(m.rev, ev.KV.Rev)
	if ev.Type == state.Delete {
		delete(m.kvs, ev.KV.Key)
	} else {
		m.kvs[ev.KV.Key] = ev.KV
	}
	m.notifyLocked(ev.KV.Key)
}

func (m *mirror) notifyLocked(key string) {
	if c, ok := m.changed[key]; ok {
		close(c)
		delete(m.changed, key)
	}
}

func (m *mirror) setSynced(v bool) {
	m.mu.Lock()
	m.synced = v
	m.mu.Unlock()
}

// get returns key's value (nil when missing) and its index: the mod
// revision, at least 1. ok is false while the mirror is not in sync.
func (m *mirror) get(key string) (val []byte, idx int64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.getLocked(key)
}

func (m *mirror) getLocked(key string) ([]byte, int64, bool) {
	kv, found := m.kvs[key]
	if !found {
		return nil, 1, m.synced
	}
	return kv.Value, max(kv.Rev, 1), m.synced
}

// wait blocks until key's index passes index, wait passes or ctx ends, and
// returns the key as get does. ok is false when the mirror is out of sync:
// the caller should read the store instead.
func (m *mirror) wait(ctx context.Context, key string, index int64, wait time.Duration) ([]byte, int64, bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		m.mu.Lock()
		val, idx, ok := m.getLocked(key)
		// An index past the store's revision came from another store (a
		// migration, a restore): answer at once, and the client starts
		// over from what it gets.
		if !ok || idx > index || wait <= 0 || index > m.rev {
			m.mu.Unlock()
			return val, idx, ok
		}
		c, found := m.changed[key]
		if !found {
			c = make(chan struct{})
			m.changed[key] = c
		}
		m.mu.Unlock()
		select {
		case <-c:
		case <-t.C:
			return m.get(key)
		case <-ctx.Done():
			return nil, 0, true
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

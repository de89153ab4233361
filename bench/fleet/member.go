package main

import (
	"context"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// member is one agent of the fleet with what the bench records about it:
// when its desired-state source delivered each artifact, and each download.
type member struct {
	name   string
	root   string
	c      *client.Client
	b      *Bench
	done   chan error // the agent's Run
	report atomic.Bool

	mu        sync.Mutex
	delivered map[string]time.Time // artifact sha256 → when Watch last called fn with it newly named
	last      string               // the artifact the last document named
	downloads map[string]download  // artifact sha256 → its (last) download
}

// download is one artifact fetch by an agent, timed from the request to
// the body's end.
type download struct {
	Start, End time.Time
	Bytes      int64
}

// Watch is the agent's source of desired states (client.WatchDesired),
// with the moment each new document is handed to the agent recorded.
func (m *member) Watch(ctx context.Context, fn func(*desired.Doc, error)) error {
	return m.c.WatchDesired(ctx, 5*time.Minute, func(doc *desired.Doc, err error) {
		if err != nil {
			m.b.errorf("%s: desired: %v", m.name, err)
		} else if a, ok := doc.Apps[appName]; ok {
			now := time.Now()
			m.mu.Lock()
			// A document that names another artifact than the last one
			// delivers it (again, on a redeploy of an earlier release).
			if a.SHA256 != m.last {
				m.delivered[a.SHA256], m.last = now, a.SHA256
			}
			m.mu.Unlock()
			m.b.nudge()
		}
		fn(doc, err)
	})
}

// reportFn is the agent's Config.Report: client.Report, noting the first
// success so the bench knows every agent is up.
func (m *member) reportFn(ctx context.Context, st api.HostReport) error {
	err := m.c.Report(ctx, api.Report{State: st})
	if err == nil && !m.report.Swap(true) {
		m.b.nudge()
	} else if err != nil && ctx.Err() == nil {
		m.b.errorf("%s: report: %v", m.name, err)
	}
	return err
}

func (m *member) deliveredAt(sha string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.delivered[sha]
	return t, ok
}

// downloadOf is the agent's download of sha that started after since.
func (m *member) downloadOf(sha string, since time.Time) (download, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.downloads[sha]
	return d, ok && !d.Start.Before(since)
}

// timedSource wraps the client's artifact source to time each download.
type timedSource struct {
	base fetch.Source
	m    *member
}

func (s timedSource) Open(ctx context.Context, u *url.URL, offset int64) (io.ReadCloser, bool, error) {
	start := time.Now()
	rc, resumed, err := s.base.Open(ctx, u, offset)
	if err != nil {
		return rc, resumed, err
	}
	sha := u.Path[strings.LastIndexByte(u.Path, '/')+1:]
	return &timedBody{ReadCloser: rc, m: s.m, sha: sha, start: start}, resumed, nil
}

// timedBody records its download when the body ends or is closed.
type timedBody struct {
	io.ReadCloser
	m     *member
	sha   string
	start time.Time
	n     int64
	once  sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.record()
	}
	return n, err
}

func (b *timedBody) Close() error {
	b.record()
	return b.ReadCloser.Close()
}

func (b *timedBody) record() {
	b.once.Do(func() {
		d := download{Start: b.start, End: time.Now(), Bytes: b.n}
		b.m.mu.Lock()
		b.m.downloads[b.sha] = d
		b.m.mu.Unlock()
	})
}

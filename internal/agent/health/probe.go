package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Prober runs one check of an instance. Probe returns nil when the instance
// is healthy and an error saying what was wrong otherwise. The ctx carries
// the check's timeout: a Prober must return promptly once it is done, and
// when it is, it reports context.Cause(ctx) (the Checker's cause says
// "timed out after …").
type Prober interface {
	Probe(ctx context.Context) error
}

const (
	// maxBody bounds what an HTTP check reads: enough for any health page,
	// and an endless body cannot hold a check open.
	maxBody = 64 << 10
	// maxOutput is how much of a failed check's output its error quotes.
	maxOutput = 200
)

// HTTP returns a Prober that GETs url and wants status, or any 2xx or 3xx
// status when status is 0. Redirects are not followed, and every probe
// opens a new connection.
func HTTP(url string, status int) Prober {
	return &httpProber{
		url:    url,
		status: status,
		client: &http.Client{
			// A fresh connection each time, as kubelet's probes do: a kept-alive
			// one would go on passing after the app stopped accepting new ones.
			// No proxy: the instance is on this host's loopback.
			Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
			// The redirect is the app's answer; following it would check some
			// other endpoint, perhaps not even on this host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

type httpProber struct {
	url    string
	status int
	client *http.Client
}

func (p *httpProber) String() string { return "GET " + p.url }

func (p *httpProber) Probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	req.Header.Set("User-Agent", "ferry-health/1")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", p, probeError(ctx, err))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("%s: reading body: %w", p, probeError(ctx, err))
	}
	if p.wants(resp.StatusCode) {
		return nil
	}
	want := "2xx or 3xx"
	if p.status != 0 {
		want = fmt.Sprint(p.status)
	}
	err = fmt.Errorf("%s: status %d, want %s", p, resp.StatusCode, want)
	// Health pages often say what is wrong; that is worth a status line.
	if len(body) > maxOutput {
		err = fmt.Errorf("%w; body: %s…", err, quote(body[:maxOutput]))
	} else if b := quote(body); b != "" {
		err = fmt.Errorf("%w; body: %s", err, b)
	}
	return err
}

func (p *httpProber) wants(code int) bool {
	if p.status != 0 {
		return code == p.status
	}
	return code >= 200 && code < 400
}

// TCP returns a Prober that succeeds when a TCP connection to addr opens.
func TCP(addr string) Prober { return &tcpProber{addr: addr} }

type tcpProber struct{ addr string }

func (p *tcpProber) String() string { return "dial tcp " + p.addr }

func (p *tcpProber) Probe(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", p, context.Cause(ctx))
		}
		return err // already says "dial tcp ADDR: …"
	}
	return conn.Close()
}

// Exec returns a Prober that runs command with `sh -c` in dir with env (nil
// env: this process's environment), healthy when it exits 0. The command
// runs in its own process group; the whole group is killed when the ctx is
// done, and whatever the command leaves running is killed when it exits, so
// a check never leaves processes behind.
func Exec(command, dir string, env []string) Prober {
	return &execProber{command: command, dir: dir, env: env}
}

type execProber struct {
	command, dir string
	env          []string
	cred         *syscall.Credential // run as this user; nil: the agent's
}

func (p *execProber) String() string { return fmt.Sprintf("exec %q", p.command) }

func (p *execProber) Probe(ctx context.Context) error {
	// Our own pipe rather than an io.Writer: with one, Wait would also wait
	// for every background process still holding the output open.
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	cmd := exec.Command("sh", "-c", p.command)
	cmd.Dir, cmd.Env = p.dir, p.env
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.cred}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("%s: %w", p, err)
	}
	out := &tail{max: maxOutput}
	copied := make(chan struct{})
	go func() {
		io.Copy(out, r)
		close(copied)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	pgid := cmd.Process.Pid
	select {
	case err = <-exited:
	case <-ctx.Done():
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
		err = context.Cause(ctx)
	}
	// Safe though the leader is reaped: the group id stays reserved while any
	// member lives, and once none does, reuse would need the kernel's pid
	// counter to wrap around in between.
	syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-copied:
	case <-time.After(100 * time.Millisecond):
		// Something that left the group (setsid) still holds the pipe; the
		// output so far will do.
	}
	r.Close()
	<-copied
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: %w", p, err)
	if o := quote(out.buf); out.cut {
		err = fmt.Errorf("%w; output: …%s", err, o)
	} else if o != "" {
		err = fmt.Errorf("%w; output: %s", err, o)
	}
	return err
}

// probeError unwraps the *url.Error the HTTP client wraps everything in
// (it repeats the method and URL) and says why a done ctx stopped the probe.
func probeError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// tail is an io.Writer keeping the last max bytes written to it.
type tail struct {
	max int
	buf []byte
	cut bool // bytes before buf were dropped
}

func (t *tail) Write(b []byte) (int, error) {
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return len(b), nil
}

// quote puts output on one status line: trimmed, and quoted so newlines
// and control characters cannot garble a log line. Bytes of a rune cut in
// two at either end are dropped.
func quote(b []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), ""))
	if s == "" {
		return ""
	}
	return strconv.Quote(s)
}

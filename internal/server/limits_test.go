package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent/logship"
	"github.com/ferrydeploy/ferry/internal/tlsca"
)

func TestConnCaps(t *testing.T) {
	for name, tc := range map[string]struct {
		maxConns, perIP int
		nofile          uint64
		total, perAddr  int
		clamped         bool
	}{
		"defaults, a big fd limit":         {0, 0, 1 << 20, 1<<20 - 1<<18, DefaultMaxConnsPerIP, false},
		"defaults, the usual 1024":         {0, 0, 1024, 768, DefaultMaxConnsPerIP, false},
		"a small fd limit keeps 64 fds":    {0, 0, 100, 36, DefaultMaxConnsPerIP, false},
		"a tiny fd limit still serves":     {0, 0, 10, 1, DefaultMaxConnsPerIP, false},
		"configured under the fd limit":    {5000, 300, 1 << 20, 5000, 300, false},
		"configured over the fd limit":     {5000, 300, 1024, 768, 300, true},
		"no per-address cap":               {100, -1, 1 << 20, 100, 0, false},
		"an unlimited fd limit fits":       {0, 0, ^uint64(0), 1<<30 - 1<<28, DefaultMaxConnsPerIP, false},
		"configured at the fd-limit bound": {768, 0, 1024, 768, DefaultMaxConnsPerIP, false},
	} {
		total, perAddr, clamped := connCaps(tc.maxConns, tc.perIP, tc.nofile)
		if total != tc.total || perAddr != tc.perAddr || clamped != tc.clamped {
			t.Errorf("%s: connCaps(%d, %d, %d) = %d, %d, %v; want %d, %d, %v", name, tc.maxConns, tc.perIP, tc.nofile,
				total, perAddr, clamped, tc.total, tc.perAddr, tc.clamped)
		}
	}
}

func TestAddrKey(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.2:4000":            "127.0.0.2",
		"[::ffff:10.0.0.1]:4000":    "10.0.0.1", // one client, whichever socket family it came in on
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:81":      "2001:db8:1:2::/64", // the same /64: the same client
		"[fe80::1%lo]:80":           "fe80::/64",
	} {
		ap, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := addrKey(ap); got != want {
			t.Errorf("addrKey(%s) = %q, want %q", addr, got, want)
		}
	}
}

// TestConnLimiterAdmit: the per-address cap, the global cap, and the
// reserve below it that only addresses holding few connections may use.
func TestConnLimiterAdmit(t *testing.T) {
	type holding struct {
		addr string
		n    int
	}
	for name, tc := range map[string]struct {
		max, perAddr int
		held         []holding // open connections, admitted in this order
		from         string
		want         string
	}{
		// max 64: a reserve of 4, for addresses holding fewer than 8.
		"under every cap":                      {64, 10, []holding{{"a", 9}}, "a", ""},
		"at the per-address cap":               {64, 10, []holding{{"a", 10}}, "a", "--max-conns-per-ip"},
		"another address at that time":         {64, 10, []holding{{"a", 10}}, "b", ""},
		"no per-address cap":                   {64, 0, []holding{{"a", 50}}, "a", ""},
		"at the global cap":                    {64, 0, []holding{{"a", 60}, {"b", 4}}, "b", "--max-conns"},
		"at the global cap, a new address":     {64, 0, []holding{{"a", 60}, {"b", 4}}, "c", "--max-conns"},
		"in the reserve, holding many":         {64, 0, []holding{{"a", 52}, {"b", 8}}, "b", "--max-conns"},
		"in the reserve, holding few":          {64, 0, []holding{{"a", 56}, {"b", 7}}, "b", ""},
		"in the reserve, a new address":        {64, 0, []holding{{"a", 60}, {"b", 3}}, "c", ""},
		"just below the reserve, holding many": {64, 0, []holding{{"a", 51}, {"b", 8}}, "b", ""},
	} {
		l := newConnLimiter(nil, tc.max, tc.perAddr, nil)
		for _, h := range tc.held {
			for range h.n {
				if over := l.admit(h.addr); over != "" {
					t.Fatalf("%s: setting up: %s refused (%s)", name, h.addr, over)
				}
			}
		}
		if got := l.admit(tc.from); got != tc.want {
			t.Errorf("%s: admit(%s) = %q, want %q", name, tc.from, got, tc.want)
		}
	}
	l := newConnLimiter(nil, 2, 1, nil)
	l.admit("a")
	l.release("a")
	if over := l.admit("a"); over != "" || l.open != 1 {
		t.Errorf("a released connection is still counted: %q, %d open", over, l.open)
	}
}

// dialFrom opens a TCP connection to the server from the loopback address
// ip (127.0.0.0/8 is all loopback on Linux: each address is another client).
func (ts *testServer) dialFrom(ip string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", strings.TrimPrefix(ts.srv.URL(), "https://"))
}

// tlsFrom is dialFrom with the TLS handshake done.
func (ts *testServer) tlsFrom(ip string) (*tls.Conn, error) {
	c, err := ts.dialFrom(ip)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, tlsca.PinnedClient(ts.srv.CASHA256()))
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// clientFrom is an HTTPS client whose connections come from ip.
func (ts *testServer) clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: tlsca.PinnedClient(ts.srv.CASHA256())}}
}

func healthz(c *http.Client, url string) error {
	resp, err := c.Get(url + api.PathHealth)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// held tells, of conns the server has accepted, which it keeps open: a
// refused one reads its end at once, a held one reads nothing within wait.
func held(conns []net.Conn, wait time.Duration) []bool {
	out := make([]bool, len(conns))
	done := make(chan struct{})
	for i, c := range conns {
		go func() {
			defer func() { done <- struct{}{} }()
			c.SetReadDeadline(time.Now().Add(wait))
			_, err := c.Read(make([]byte, 1))
			out[i] = errors.Is(err, os.ErrDeadlineExceeded)
			c.SetReadDeadline(time.Time{})
		}()
	}
	for range conns {
		<-done
	}
	return out
}

func count(bs []bool) (n int) {
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// waitClosed waits until the server has closed c, up to by, and says
// whether it did.
func waitClosed(c net.Conn, by time.Time) bool {
	c.SetReadDeadline(by)
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestSlowAndBigRequests: a flood from one address, of connections that
// trickle a join body (no token needed) or never finish their TLS
// handshake, gets no more connections than the per-address cap; floods
// from several addresses fill the global cap only up to a reserve that a
// client holding few connections still gets; meanwhile /healthz and real
// clients from another address are answered; the server closes the
// trickling connections after the body timeout and the stalled ones after
// the header timeout, and then the flooding address may connect again. A
// body over the size limit and invalid JSON get 400.
func TestSlowAndBigRequests(t *testing.T) {
	const (
		perIP       = 50
		maxConns    = 120 // a reserve of 120/16 = 7 slots for addresses holding few
		bodyTimeout = 5 * time.Second
	)
	ts := startServer(t, t.TempDir(), func(c *Config) {
		c.MaxConns, c.MaxConnsPerIP, c.BodyTimeout = maxConns, perIP, bodyTimeout
	})
	url := ts.srv.URL()

	// 300 connections from 127.0.0.2, each sending a join's headers and
	// trickling its body, a byte every 200 ms.
	var trickling []net.Conn
	var sent []time.Time
	refused := 0
	for range 300 {
		c, err := ts.tlsFrom("127.0.0.2")
		if err != nil {
			refused++
			continue
		}
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{", api.PathAgentJoin)
		trickling = append(trickling, c)
		sent = append(sent, time.Now())
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for _, c := range trickling {
					c.Write([]byte(" "))
				}
			}
		}
	}()
	if len(trickling) != perIP || refused != 300-perIP {
		t.Errorf("of 300 connections from one address, %d were served and %d refused; want %d and %d (--max-conns-per-ip)", len(trickling), refused, perIP, 300-perIP)
	}

	// 100 connections each from 127.0.0.3 and 127.0.0.4 that send the
	// start of a ClientHello and no more.
	var stalled []net.Conn
	var stalledAt time.Time
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		var conns []net.Conn
		for range 100 {
			c, err := ts.dialFrom(ip)
			if errors.Is(err, syscall.ECONNRESET) {
				continue // refused before connect returned
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte{0x16, 0x03, 0x01})
			conns = append(conns, c)
		}
		if stalledAt.IsZero() {
			stalledAt = time.Now()
		}
		h := held(conns, time.Second)
		for i, c := range conns {
			if h[i] {
				stalled = append(stalled, c)
			}
		}
		// 127.0.0.3 gets its 50; 127.0.0.4 only what is left below
		// the reserve: 120 - 7 - 100.
		want := map[string]int{"127.0.0.3": perIP, "127.0.0.4": maxConns - maxConns/16 - 2*perIP}[ip]
		if n := count(h); n != want {
			t.Errorf("%s: %d of 100 connections held, want %d", ip, n, want)
		}
	}
	if time.Since(sent[0]) > bodyTimeout {
		t.Fatalf("setting up took %s, longer than the body timeout: the counts above do not hold", time.Since(sent[0]))
	}

	// Another client still gets in, through the reserve; the flooder not.
	start := time.Now()
	if err := healthz(ts.client, url); err != nil {
		t.Fatalf("/healthz from 127.0.0.1 during the floods: %v", err)
	}
	if code, msg := ts.call("GET", api.PathStatus, ts.admin, nil, nil); code != 200 {
		t.Fatalf("status from 127.0.0.1 during the floods: %d %s", code, msg)
	}
	t.Logf("answered in %s during the floods", time.Since(start).Round(time.Millisecond))
	if err := healthz(ts.clientFrom("127.0.0.2"), url); err == nil {
		t.Error("/healthz from the flooding address was answered beyond its cap")
	}
	big := `{"app":"web","group":"prod","version":"` + strings.Repeat("x", 5<<20) + `"}`
	if code, _ := ts.send("POST", api.PathDeployments, ts.admin, strings.NewReader(big), nil, nil); code != 400 {
		t.Errorf("a 5 MiB deploy request: %d, want 400", code)
	}
	if code, _ := ts.send("POST", api.PathDeployments, ts.admin, strings.NewReader(`{"app":`), nil, nil); code != 400 {
		t.Errorf("invalid JSON: %d, want 400", code)
	}

	// The trickling connections are closed after the body timeout, the
	// stalled ones after the header timeout (10 s).
	open := 0
	for i, c := range trickling {
		if !waitClosed(c, sent[i].Add(bodyTimeout+3*time.Second)) {
			open++
		}
	}
	if open > 0 {
		t.Errorf("%d of %d connections trickling a body still open %s after their headers", open, len(trickling), bodyTimeout+3*time.Second)
	}
	open = 0
	for _, c := range stalled {
		if !waitClosed(c, stalledAt.Add(15*time.Second)) {
			open++
		}
	}
	if open > 0 {
		t.Errorf("%d of %d stalled connections still open after 15 s", open, len(stalled))
	}
	// Their slots are given back: the flooding address may connect again.
	deadline := time.Now().Add(5 * time.Second)
	for err := healthz(ts.clientFrom("127.0.0.2"), url); err != nil; err = healthz(ts.clientFrom("127.0.0.2"), url) {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz from 127.0.0.2 after its connections closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBodyTimeouts: a trickled JSON body is cut after the body timeout;
// an upload that keeps moving may take longer, one that stalls is cut and
// leaves nothing stored; a quiet log stream and a blocking query outlive
// the body timeout.
func TestBodyTimeouts(t *testing.T) {
	const bodyTimeout, stall = time.Second, 1500 * time.Millisecond
	data := t.TempDir()
	ts := startServer(t, data, func(c *Config) { c.BodyTimeout, c.UploadStall = bodyTimeout, stall })

	t.Run("trickled join body", func(t *testing.T) {
		c, err := ts.tlsFrom("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: ferry\r\nContent-Length: 1000\r\n\r\n{", api.PathAgentJoin)
		start := time.Now()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
					c.Write([]byte(" "))
				}
			}
		}()
		c.SetReadDeadline(time.Now().Add(bodyTimeout + 5*time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer to a trickled body: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		took := time.Since(start)
		if resp.StatusCode != 400 || !strings.Contains(string(b), "not all there after 1s") {
			t.Errorf("a trickled body: %d %s", resp.StatusCode, b)
		}
		if took < bodyTimeout || took > bodyTimeout+3*time.Second {
			t.Errorf("a trickled body was cut after %s, want %s", took, bodyTimeout)
		}
		if !waitClosed(c, time.Now().Add(3*time.Second)) {
			t.Error("the connection stays open after a body timed out")
		}
	})

	path, sum := buildAppWith(t, "web", "1.0", "")
	art, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("stalled upload", func(t *testing.T) {
		// Half the artifact, then nothing for twice the stall bound.
		body := &pacedReader{parts: [][]byte{art[:len(art)/2], art[len(art)/2:]}, gap: 2 * stall}
		code, msg := ts.uploadPaced(body, len(art), "web", sum)
		if code != 400 || !strings.Contains(msg, "nothing arrived for 1.5s") {
			t.Errorf("a stalled upload: %d %s", code, msg)
		}
		if files := storedFiles(t, data); len(files) != 0 {
			t.Errorf("a stalled upload left %v", files)
		}
		var arts []api.Artifact
		ts.must(200, "GET", api.PathArtifacts, ts.admin, nil, &arts)
		if len(arts) != 0 {
			t.Errorf("a stalled upload left a record: %+v", arts)
		}
	})
	t.Run("slow upload", func(t *testing.T) {
		// Eight parts a third of the stall bound apart: well over the
		// body timeout in all.
		var parts [][]byte
		for i := range 8 {
			parts = append(parts, art[i*len(art)/8:(i+1)*len(art)/8])
		}
		start := time.Now()
		code, msg := ts.uploadPaced(&pacedReader{parts: parts, gap: stall / 3}, len(art), "web", sum)
		if code != 201 {
			t.Fatalf("a slow upload: %d %s", code, msg)
		}
		if took := time.Since(start); took < 2*bodyTimeout {
			t.Fatalf("the slow upload took only %s", took)
		}
	})

	t.Run("blocking query", func(t *testing.T) {
		cred := ts.join("web-1", "prod")
		start := time.Now()
		d := ts.desired(cred, 0, 0)
		ts.report(cred, "web-1", "", "", "", "") // a body on the same connection first
		ts.desired(cred, d.Index, 2*bodyTimeout)
		if took := time.Since(start); took < 2*bodyTimeout {
			t.Errorf("a blocking query of %s returned after %s", 2*bodyTimeout, took)
		}
	})

	t.Run("quiet log stream", func(t *testing.T) {
		cred := ts.join("web-2", "prod")
		ts.report(cred, "web-2", "hello", "v1", "running", "")
		apps := t.TempDir()
		logs := filepath.Join(apps, "hello", "logs")
		os.MkdirAll(logs, 0o755)
		os.WriteFile(filepath.Join(logs, "web.1.log"), []byte(time.Now().UTC().Format(time.RFC3339Nano)+" out first\n"), 0o644)
		agentC, _ := client.New(ts.srv.URL(), cred, ts.srv.CASHA256())
		admin, _ := client.New(ts.srv.URL(), ts.admin, ts.srv.CASHA256())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go logship.Serve(ctx, agentC, apps, nil)
		lines := make(chan api.LogLine, 10)
		go admin.Logs(ctx, client.LogQuery{App: "hello", Lines: 1, Follow: true}, func(l api.LogLine) { lines <- l })
		select {
		case <-lines:
		case <-time.After(10 * time.Second):
			t.Fatal("no first line")
		}
		time.Sleep(3 * bodyTimeout) // the app says nothing for a while: the point of the test
		f, _ := os.OpenFile(filepath.Join(logs, "web.1.log"), os.O_APPEND|os.O_WRONLY, 0)
		fmt.Fprintf(f, "%s out later\n", time.Now().UTC().Format(time.RFC3339Nano))
		f.Close()
		select {
		case l := <-lines:
			if !strings.HasSuffix(l.Line, "later") {
				t.Fatalf("followed: %+v", l)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a line written after %s of quiet did not come", 3*bodyTimeout)
		}
	})
}

// TestUploadSizeLimit: an upload over --max-artifact-size is refused with
// 413 before its body is sent, and leaves nothing stored; one of exactly
// that size is taken; one without a Content-Length is refused unread.
func TestUploadSizeLimit(t *testing.T) {
	small, smallSum := buildAppWith(t, "web", "1.0", "")
	noise := make([]byte, 2048)
	rand.Read(noise)
	big, bigSum := buildAppWith(t, "web", "2.0", "# "+hex.EncodeToString(noise)+"\n")
	smallB, _ := os.ReadFile(small)
	bigB, _ := os.ReadFile(big)
	if len(bigB) <= len(smallB) {
		t.Fatalf("the big artifact is %d bytes, the small %d", len(bigB), len(smallB))
	}
	data := t.TempDir()
	ts := startServer(t, data, func(c *Config) { c.MaxArtifactSize = int64(len(smallB)) })
	hdr := func(sum string) map[string]string {
		return map[string]string{api.SHA256Header: sum, api.AppHeader: "web"}
	}

	// Asked with 100-continue, as ferry publish does: the answer is 413,
	// not "send it".
	c, err := ts.tlsFrom("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: ferry\r\nAuthorization: Bearer %s\r\n%s: %s\r\n%s: web\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
		api.PathArtifacts, ts.admin, api.SHA256Header, bigSum, api.AppHeader, len(bigB))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !strings.Contains(string(b), "--max-artifact-size") {
		t.Errorf("an upload over the limit, 100-continue: %d %s", resp.StatusCode, b)
	}
	// Sent whole, without asking first.
	if code, msg := ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(bigB), hdr(bigSum), nil); code != 413 {
		t.Errorf("an upload over the limit: %d %s", code, msg)
	}
	// Chunked, its length unknown.
	if code, msg := ts.send("POST", api.PathArtifacts, ts.admin, io.MultiReader(bytes.NewReader(bigB)), hdr(bigSum), nil); code != 400 || !strings.Contains(msg, "Content-Length") {
		t.Errorf("a chunked upload: %d %s", code, msg)
	}
	if files := storedFiles(t, data); len(files) != 0 {
		t.Errorf("refused uploads left %v", files)
	}
	if code, msg := ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(smallB), hdr(smallSum), nil); code != 201 {
		t.Errorf("an upload of exactly the limit: %d %s", code, msg)
	}
	var arts []api.Artifact
	ts.must(200, "GET", api.PathArtifacts, ts.admin, nil, &arts)
	if len(arts) != 1 || arts[0].SHA256 != smallSum {
		t.Errorf("artifacts: %+v, want only %s", arts, smallSum)
	}
	if files := storedFiles(t, data); len(files) != 1 || !strings.Contains(files[0], smallSum) {
		t.Errorf("stored: %v, want only %s", files, smallSum)
	}
}

// pacedReader yields its parts gap apart.
type pacedReader struct {
	parts [][]byte
	gap   time.Duration
	sent  bool
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(p.parts) == 0 {
		return 0, io.EOF
	}
	if p.sent {
		time.Sleep(p.gap)
	}
	n := copy(b, p.parts[0])
	if p.parts[0] = p.parts[0][n:]; len(p.parts[0]) == 0 {
		p.parts, p.sent = p.parts[1:], true
	}
	return n, nil
}

// uploadPaced uploads app's artifact sum, n bytes read from body as it
// yields them.
func (ts *testServer) uploadPaced(body io.Reader, n int, app, sum string) (int, string) {
	ts.t.Helper()
	req, err := http.NewRequest("POST", ts.srv.URL()+api.PathArtifacts, body)
	if err != nil {
		ts.t.Fatal(err)
	}
	req.ContentLength = int64(n)
	req.Header.Set("Authorization", "Bearer "+ts.admin)
	req.Header.Set(api.SHA256Header, sum)
	req.Header.Set(api.AppHeader, app)
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatalf("upload: %v", err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Message
}

// storedFiles lists the files under the artifact store's directory.
func storedFiles(t *testing.T, data string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(data, ArtifactsDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

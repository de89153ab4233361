package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBackendAnswersBeforeReadingBody: an app that answers a POST without
// reading its body and closes the connection, as gunicorn's sync workers
// do, must not cost a keep-alive client of the proxy its request. (The
// proxy's retry wrapper of the body once hid the body from ReverseProxy's
// Close, so the Transport read the client's connection after the handler
// had returned: net/http panicked, "invalid concurrent Body.Read call",
// and reset the client.)
func TestBackendAnswersBeforeReadingBody(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // the request line and headers, never the body
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n")
			}()
		}
	}()
	p, url := startProxy(t, Options{})
	p.Add(l.Addr().String())
	var failed atomic.Int64
	var mu sync.Mutex
	var first string
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c := &http.Client{Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for range 100 {
				// The body follows its headers a moment later, so the
				// proxy's Transport is still reading it when the app has
				// answered and the proxy's handler returns.
				pr, pw := io.Pipe()
				go func() {
					time.Sleep(5 * time.Millisecond) // not a wait for state: the delay is the test
					pw.Write([]byte(strings.Repeat("payload", 100)))
					pw.Close()
				}()
				req, _ := http.NewRequest(http.MethodPost, url, pr)
				req.ContentLength = 700
				res, err := c.Do(req)
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						err = io.ErrUnexpectedEOF
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if first == "" {
						first = err.Error()
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 400 keep-alive POSTs failed, e.g. %s", n, first)
	}
}

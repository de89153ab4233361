package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// serveStatus serves GET /v1/status on root/agent.sock, readable by the
// socket's owner only (the status names pids and errors, not secrets, but
// the socket is the agent's API and will grow).
func (a *Agent) serveStatus() (io.Closer, error) {
	path := filepath.Join(a.cfg.Root, SocketFile)
	// The agent lock is held: a socket file left here is a dead agent's.
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent: status socket: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.Snapshot().Redacted())
	})
	mux.HandleFunc("POST /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Self == "" {
			http.Error(w, "this agent does not know the path of its binary", http.StatusConflict)
			return
		}
		a.Upgrade()
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return srv, nil
}

// RequestUpgrade asks the agent running on root to hand over to the ferry
// binary at its path (replace the binary first).
func RequestUpgrade(ctx context.Context, root string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/v1/upgrade", nil)
	resp, err := socketClient(root).Do(req)
	if err != nil {
		return fmt.Errorf("no agent answers on %s: %w", filepath.Join(root, SocketFile), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("agent upgrade: %s: %s", resp.Status, b)
	}
	return nil
}

func socketClient(root string) *http.Client {
	path := filepath.Join(root, SocketFile)
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// Status asks the agent running on root for its state. When no agent
// answers, it reads the state file the last one left and live is false.
func Status(ctx context.Context, root string) (st *State, live bool, err error) {
	c := socketClient(root)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/status", nil)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, false, ctx.Err()
		}
		st, rerr := ReadState(root)
		return st, false, rerr
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, fmt.Errorf("agent status: %s", resp.Status)
	}
	st = &State{}
	if err := json.NewDecoder(resp.Body).Decode(st); err != nil {
		return nil, false, fmt.Errorf("agent status: %w", err)
	}
	return st, true, nil
}

// Package clienttest starts a real ferry control server on loopback for
// tests of the client and the CLI, and makes what they deploy: artifacts
// and hosts. Nothing in it is a mock.
package clienttest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/server"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
	"github.com/ferrydeploy/ferry/internal/store/dir"
)

// StartServer runs a server with its own data dir, bolt state and
// directory store on a free loopback port until the test ends.
func StartServer(t testing.TB) *server.Server {
	t.Helper()
	data := t.TempDir()
	st, err := bolt.Open(filepath.Join(data, server.StateFile), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after the server stops: cleanups run last first
	blobs, err := dir.New(filepath.Join(data, server.ArtifactsDir))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Config{Data: data, Listen: "127.0.0.1:0", HostLostAfter: time.Minute, State: st, Store: blobs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return srv
}

// Client returns a client of srv with token, trusting srv's CA.
func Client(t testing.TB, srv *server.Server, token string) *client.Client {
	t.Helper()
	c, err := client.New(srv.URL(), token, srv.CASHA256())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// WriteArtifact packs a small ferry artifact of app at version into dir
// (made if missing) and returns its path. Different versions differ in
// their bytes; pad adds that many bytes so an upload takes several reads.
func WriteArtifact(t testing.TB, dir, app, version string, pad int) string {
	t.Helper()
	meta := `{"app":"` + app + `","version":"` + version + `","os":"linux","arch":"amd64","processes":["web"],"built":"2026-01-01T00:00:00Z"}`
	var b bytes.Buffer
	err := artifact.Pack(&b, []artifact.Entry{
		{Name: ".ferry", Dir: true},
		{Name: ferry.MetaPath, Data: []byte(meta)},
		{Name: "ferry.yaml", Data: []byte("app: " + app + "\nprocesses:\n  web:\n    command: bin/web\n")},
		{Name: "bin", Dir: true},
		{Name: "bin/web", Data: []byte("#!/bin/sh\nexec sleep 1000\n"), Exec: true},
		{Name: "padding", Data: bytes.Repeat([]byte{'.'}, pad)},
	}, artifact.FormatZstd, time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, app+"-"+version+".tar.zst")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// JoinToken makes a join token for groups, which also makes the server
// know them.
func JoinToken(t testing.TB, admin *client.Client, groups ...string) string {
	t.Helper()
	tok, err := admin.CreateJoinToken(context.Background(), api.JoinTokenRequest{Groups: groups, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Secret == "" {
		t.Fatal("join token without a secret")
	}
	return tok.Secret
}

// Join registers host name with a join token, as an agent's first start
// does, and returns a client with the host's own credential. A host that
// never reports keeps a rollout to its group, and the group's lock, alive.
func Join(t testing.TB, srv *server.Server, joinToken, name string) *client.Client {
	t.Helper()
	res, err := Client(t, srv, "").Join(context.Background(), api.JoinRequest{Token: joinToken, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return Client(t, srv, res.Secret)
}

// Package etcdtest runs real etcd members on loopback for tests: the
// `etcd` binary of Debian's etcd-server package (scripts/install-deps.sh
// installs it). Without it a test skips, except when $CI is set, where it
// fails: a missing dependency must not pass for a green run.
package etcdtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Cluster is a running etcd cluster of one or more members.
type Cluster struct {
	t       testing.TB
	bin     string
	dir     string
	ca      string // PEM CA clients trust, for a TLS cluster
	members []*member
}

type member struct {
	name, client, peer string
	args               []string
	mu                 sync.Mutex
	cmd                *exec.Cmd
	done               chan struct{}
}

// Binary returns the etcd binary, skipping (or failing in CI) the test
// when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	return testenv.NeedCommand(t, "etcd")
}

// Start starts an n-member cluster and waits until it answers. The members
// stop when the test ends.
func Start(t testing.TB, n int) *Cluster { return start(t, n, "", "", "") }

// StartTLS starts one member that serves its clients over TLS with the
// given PEM certificate and key (for 127.0.0.1); ca is what clients trust.
func StartTLS(t testing.TB, cert, key, ca string) *Cluster { return start(t, 1, cert, key, ca) }

func start(t testing.TB, n int, cert, key, ca string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t), dir: t.TempDir(), ca: ca}
	scheme := "http://"
	if cert != "" {
		scheme = "https://"
	}
	var initial []string
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i), client: scheme + freeAddr(t), peer: "http://" + freeAddr(t)}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	for _, m := range c.members {
		m.args = []string{
			"--name", m.name,
			"--data-dir", filepath.Join(c.dir, m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", filepath.Base(c.dir),
			// Fast elections, so that fault tests fail over in well under
			// a second; leases then may be as short as one second.
			"--heartbeat-interval", "20", "--election-timeout", "200",
			"--logger", "zap", "--log-level", "error",
		}
		if cert != "" {
			m.args = append(m.args, "--cert-file", cert, "--key-file", key)
		}
		c.start(m)
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			c.stop(m, syscall.SIGKILL)
		}
	})
	c.WaitReady()
	return c
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.client
	}
	return out
}

// Stop stops member i (SIGTERM, then SIGKILL after 5 s).
func (c *Cluster) Stop(i int) { c.stop(c.members[i], syscall.SIGTERM) }

// Kill kills member i at once.
func (c *Cluster) Kill(i int) { c.stop(c.members[i], syscall.SIGKILL) }

// Restart starts a stopped member i again with its data.
func (c *Cluster) Restart(i int) {
	m := c.members[i]
	m.args = replaceArg(m.args, "--initial-cluster-state", "existing")
	c.start(m)
}

// WaitReady waits until a write through all endpoints succeeds.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	cfg := clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			c.t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.TLS = &tls.Config{RootCAs: pool}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		c.t.Fatalf("etcd client: %v", err)
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Put(ctx, "/etcdtest/ready", "1")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcd cluster not ready within 30s: %v\n%s", err, c.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) start(m *member) {
	c.t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dir, m.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		c.t.Fatalf("start etcd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
}

func (c *Cluster) stop(m *member, sig syscall.Signal) {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func (c *Cluster) logs() string {
	var b strings.Builder
	for _, m := range c.members {
		out, _ := os.ReadFile(filepath.Join(c.dir, m.name+".log"))
		fmt.Fprintf(&b, "--- %s\n%s\n", m.name, out)
	}
	return b.String()
}

func replaceArg(args []string, flag, value string) []string {
	out := append([]string{}, args...)
	for i := range out {
		if out[i] == flag && i+1 < len(out) {
			out[i+1] = value
		}
	}
	return out
}

// handedOut are the addresses freeAddr gave: the kernel may give a port
// that was just closed again, and two members of one cluster on one port
// fail at start ("has duplicate url").
var handedOut sync.Map

// freeAddr is a loopback address nothing listens on, and one this process
// has not handed out before.
func freeAddr(t testing.TB) string {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
}

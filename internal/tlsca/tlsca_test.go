package tlsca

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ensure(t *testing.T, dir string, hosts ...string) *Files {
	t.Helper()
	f, err := Ensure(dir, hosts)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return f
}

func TestEnsureCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	f := ensure(t, dir, "ferry.example.com", "10.1.2.3", "[2001:db8::1]")

	for _, tt := range []struct {
		path string
		mode os.FileMode
	}{
		{f.CACert, 0o644}, {f.CAKey, 0o600}, {f.ServerCert, 0o644}, {f.ServerKey, 0o600},
	} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tt.mode {
			t.Errorf("%s: mode %v, want %v", filepath.Base(tt.path), fi.Mode().Perm(), tt.mode)
		}
		if filepath.Dir(tt.path) != dir {
			t.Errorf("%s is not in %s", tt.path, dir)
		}
	}

	ca := loadCert(t, f.CACert)
	if !ca.IsCA || !ca.BasicConstraintsValid {
		t.Error("ca.crt is not a CA")
	}
	if life := ca.NotAfter.Sub(ca.NotBefore); life < 9*365*24*time.Hour {
		t.Errorf("CA lives %v, want about 10 years", life)
	}
	leaf := loadCert(t, f.ServerCert)
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("server.crt is not signed by ca.crt: %v", err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 700*24*time.Hour || life > 740*24*time.Hour {
		t.Errorf("server.crt lives %v, want about 2 years", life)
	}
	hostname, _ := os.Hostname()
	want := []string{"ferry.example.com", "10.1.2.3", "2001:db8::1", "localhost", "127.0.0.1", "::1", strings.ToLower(hostname)}
	if missing := missingHosts(leaf, want); len(missing) > 0 {
		t.Errorf("server.crt lacks %q; has %q", missing, certHosts(leaf))
	}

	caPEM, _ := os.ReadFile(f.CACert)
	fp, err := Fingerprint(caPEM)
	if err != nil || fp != f.CASHA256 || len(fp) != 64 {
		t.Errorf("Fingerprint = %q, %v; Files.CASHA256 = %q", fp, err, f.CASHA256)
	}
}

func TestEnsureReuses(t *testing.T) {
	dir := t.TempDir()
	first := ensure(t, dir, "a.example")
	before := readAll(t, first)

	second := ensure(t, dir, "a.example")
	if *second != *first {
		t.Fatalf("second Ensure = %+v, want %+v", second, first)
	}
	for path, b := range readAll(t, second) {
		if b != before[path] {
			t.Errorf("second Ensure rewrote %s", filepath.Base(path))
		}
	}

	// A new host: server.crt is issued again by the same CA, and keeps
	// the name agents may already use.
	third := ensure(t, dir, "b.example")
	after := readAll(t, third)
	if after[third.CACert] != before[first.CACert] || after[third.CAKey] != before[first.CAKey] || third.CASHA256 != first.CASHA256 {
		t.Error("adding a host changed the CA")
	}
	if after[third.ServerCert] == before[first.ServerCert] {
		t.Fatal("adding a host kept server.crt")
	}
	if missing := missingHosts(loadCert(t, third.ServerCert), []string{"a.example", "b.example"}); len(missing) > 0 {
		t.Errorf("new server.crt lacks %q", missing)
	}
}

func TestEnsureRenews(t *testing.T) {
	dir := t.TempDir()
	f := ensure(t, dir)
	ca, err := loadPair(f.CACert, f.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := serverHosts(nil)
	now := time.Now()
	soon, err := issue(ca, hosts, now.Add(-time.Hour), now.Add(10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := writePair(soon, f.ServerCert, f.ServerKey); err != nil {
		t.Fatal(err)
	}
	ensure(t, dir)
	if left := time.Until(loadCert(t, f.ServerCert).NotAfter); left < 365*24*time.Hour {
		t.Errorf("server.crt expiring in 10 days was kept (%v left)", left)
	}
}

func TestEnsureCAWithoutKey(t *testing.T) {
	dir := t.TempDir()
	f := ensure(t, dir)
	if err := os.Remove(f.CAKey); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(dir, nil); err == nil || !strings.Contains(err.Error(), "without its key") {
		t.Fatalf("Ensure with ca.key gone: %v, want a refusal to replace the CA", err)
	}
}

func TestEnsureBadHost(t *testing.T) {
	if _, err := Ensure(t.TempDir(), []string{"example.com:8443"}); err == nil {
		t.Fatal("host with a port: no error")
	}
}

func TestFingerprintNotPEM(t *testing.T) {
	if _, err := Fingerprint([]byte("nope")); err == nil {
		t.Fatal("no error")
	}
}

// serve starts an HTTPS server on loopback with cfg and returns its URL.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	// Rejected handshakes are what several tests are after; keep them
	// out of the output.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.TLS = cfg
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.URL
}

func get(url string, cfg *tls.Config) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

func serverConfig(t *testing.T, f *Files) *tls.Config {
	t.Helper()
	cfg, err := ServerConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPinnedClient(t *testing.T) {
	f := ensure(t, t.TempDir())
	url := serve(t, serverConfig(t, f))

	if err := get(url, PinnedClient(f.CASHA256)); err != nil {
		t.Fatalf("pinned client by IP: %v", err)
	}
	upper := strings.ToUpper(f.CASHA256)
	if err := get(url, PinnedClient(upper)); err != nil {
		t.Fatalf("pin in upper case: %v", err)
	}
	byName := PinnedClient(f.CASHA256)
	byName.ServerName = "localhost"
	if err := get(url, byName); err != nil {
		t.Fatalf("pinned client by name: %v", err)
	}
}

func TestPinnedClientRejects(t *testing.T) {
	f := ensure(t, t.TempDir())
	other := ensure(t, t.TempDir())

	ca, err := loadPair(f.CACert, f.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := loadPair(other.CACert, other.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := serverHosts(nil)
	now := time.Now()
	expired, err := issue(ca, hosts, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// forged is another CA's leaf sent along with f's (public) CA cert:
	// the pinned CA is in the chain but signed nothing in it.
	forged, err := issue(otherCA, hosts, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	chain := func(leaf *keyPair, ca *keyPair) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{{
			Certificate: [][]byte{leaf.cert.Raw, ca.cert.Raw},
			PrivateKey:  leaf.key,
		}}}
	}
	leafOnly := serverConfig(t, f)
	leafOnly.Certificates[0].Certificate = leafOnly.Certificates[0].Certificate[:1]

	for _, tt := range []struct {
		name       string
		server     *tls.Config
		pin        string
		serverName string
		want       string
	}{
		{"other CA", serverConfig(t, other), f.CASHA256, "", "no CA in the server's chain matches"},
		{"wrong pin", serverConfig(t, f), other.CASHA256, "", "no CA in the server's chain matches"},
		{"malformed pin", serverConfig(t, f), "abc", "", "not 64 hex digits"},
		{"pin with a non-hex digit", serverConfig(t, f), strings.Repeat("g", 64), "", `is not a sha256: 'g' is not a hex digit (0-9, a-f)`},
		{"no CA sent", leafOnly, f.CASHA256, "", "sent no CA certificate"},
		{"expired leaf", chain(expired, ca), f.CASHA256, "", "expired"},
		{"leaf of another CA", chain(forged, ca), f.CASHA256, "", "unknown authority"},
		{"hostname mismatch", serverConfig(t, f), f.CASHA256, "wrong.example", "wrong.example"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := serve(t, tt.server)
			cfg := PinnedClient(tt.pin)
			cfg.ServerName = tt.serverName
			err := get(url, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
			t.Log(err)
		})
	}
}

// TestPinnedClientRaw checks the pin over a bare tls.Dial too, which is
// what non-HTTP callers (and resumed sessions) go through.
func TestPinnedClientRaw(t *testing.T) {
	f := ensure(t, t.TempDir())
	cfg := serverConfig(t, f)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := tls.Dial("tcp", net.JoinHostPort("localhost", port), PinnedClient(f.CASHA256))
	if err != nil {
		t.Fatalf("dial localhost: %v", err)
	}
	c.Close()
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	der, err := certDER(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readAll(t *testing.T, f *Files) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range []string{f.CACert, f.CAKey, f.ServerCert, f.ServerKey} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = string(b)
	}
	return m
}

// TestServerConfigSuites: a TLS 1.2 client that offers only a CBC suite
// (with a SHA-1 or SHA-256 MAC) finds no suite in common with the
// server; one that offers an AEAD suite gets it; TLS 1.3 works as Go has
// it.
func TestServerConfigSuites(t *testing.T) {
	f := ensure(t, t.TempDir())
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverConfig(t, f))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	for _, tc := range []struct {
		version uint16
		suite   uint16
		ok      bool
	}{
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
		{tls.VersionTLS13, 0, true},
	} {
		name := tls.CipherSuiteName(tc.suite)
		if tc.version == tls.VersionTLS13 {
			name = "TLS 1.3"
		}
		t.Run(name, func(t *testing.T) {
			cfg := PinnedClient(f.CASHA256)
			cfg.MinVersion, cfg.MaxVersion = tc.version, tc.version
			if tc.suite != 0 {
				cfg.CipherSuites = []uint16{tc.suite}
			}
			c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
			if err == nil {
				defer c.Close()
			}
			switch {
			case tc.ok && err != nil:
				t.Fatalf("handshake: %v", err)
			case !tc.ok && err == nil:
				t.Fatalf("handshake with only %s succeeded", name)
			case tc.ok && c.ConnectionState().Version != tc.version:
				t.Fatalf("handshake in %s", tls.VersionName(c.ConnectionState().Version))
			}
		})
	}
}

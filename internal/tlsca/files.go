// Package tlsca gives the control server its TLS on first start: a private
// CA in `ferry server --data DIR`'s tls/ directory and a server certificate
// it signs. Agents do not need a public CA or a shared secret to trust the
// server: they pin the CA by the hex sha256 of its DER bytes (--ca-sha256),
// which PinnedClient checks.
package tlsca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 2 * 365 * 24 * time.Hour
	// renewBefore is how long before expiry Ensure replaces server.crt, so
	// a server restarted now and then never serves an expired one.
	renewBefore = 30 * 24 * time.Hour
	// backdate covers clocks on agents that run a little behind.
	backdate = time.Hour
)

// Files are the paths of the server's TLS material.
type Files struct {
	CACert     string // ca.crt, PEM; agents may fetch it, it is not secret
	CAKey      string // ca.key, mode 0600
	ServerCert string // server.crt, PEM, signed by the CA
	ServerKey  string // server.key, mode 0600
	// CASHA256 is the CA's Fingerprint: what agents pass as --ca-sha256.
	CASHA256 string
}

// Ensure returns the TLS files in dir, creating what is missing. The CA is
// made once and then kept, because agents pin it; server.crt is issued
// again, by the same CA, when it lacks one of hosts (or localhost,
// 127.0.0.1, ::1, os.Hostname()) or expires within 30 days.
func Ensure(dir string, hosts []string) (*Files, error) {
	want, err := serverHosts(hosts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tlsca: %w", err)
	}
	f := &Files{
		CACert:     filepath.Join(dir, "ca.crt"),
		CAKey:      filepath.Join(dir, "ca.key"),
		ServerCert: filepath.Join(dir, "server.crt"),
		ServerKey:  filepath.Join(dir, "server.key"),
	}
	now := time.Now()
	ca, err := ensureCA(f, now)
	if err != nil {
		return nil, err
	}
	if err := ensureServer(f, ca, want, now); err != nil {
		return nil, err
	}
	f.CASHA256 = fingerprint(ca.cert.Raw)
	return f, nil
}

// ServerConfig is the server's side of TLS. It sends the CA after the leaf
// so that a pinning agent finds the certificate its fingerprint names.
func ServerConfig(files *Files) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
	if err != nil {
		return nil, fmt.Errorf("tlsca: %w", err)
	}
	caPEM, err := os.ReadFile(files.CACert)
	if err != nil {
		return nil, fmt.Errorf("tlsca: %w", err)
	}
	caDER, err := certDER(caPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsca: %s: %w", files.CACert, err)
	}
	cert.Certificate = append(cert.Certificate, caDER)
	return ServerConfigFor(cert), nil
}

// ServerConfigFor is the server's TLS settings around cert, its own or an
// operator's: TLS 1.2 with only the aeadSuites, or TLS 1.3 as Go does it
// (its suites are all AEAD and not configurable).
func ServerConfigFor(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: aeadSuites(),
	}
}

// aeadSuites are the TLS 1.2 suites the server accepts: ECDHE key exchange
// (forward secrecy) with AES-GCM or ChaCha20-Poly1305, for ECDSA and RSA
// certificates. Go's defaults also accept CBC suites with SHA-1 MACs.
func aeadSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// keyPair is a parsed certificate and its key.
type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// ensureCA loads the CA, or creates it when ca.crt is missing. ca.crt is
// written after ca.key, so a first start that died between the two is
// simply done again; a ca.crt without its key is an operator's mistake we
// must not paper over with a new CA that every pinned agent would refuse.
func ensureCA(f *Files, now time.Time) (*keyPair, error) {
	ca, err := loadPair(f.CACert, f.CAKey)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !exists(f.CACert):
		return createCA(f, now)
	case errors.Is(err, fs.ErrNotExist):
		return nil, ferry.WrapError(ferry.EINVALID, err, "tlsca: %s exists without its key; restore %s, or remove %s to make a new CA (every agent must then be joined again with the new --ca-sha256)", f.CACert, f.CAKey, f.CACert)
	case err != nil:
		return nil, fmt.Errorf("tlsca: ca: %w", err)
	case !ca.cert.IsCA:
		return nil, ferry.Errorf(ferry.EINVALID, "tlsca: %s is not a CA certificate", f.CACert)
	case now.After(ca.cert.NotAfter):
		return nil, ferry.Errorf(ferry.EINVALID, "tlsca: the CA in %s expired on %s; remove ca.crt, ca.key and server.crt to make a new one (every agent must then be joined again)", f.CACert, ca.cert.NotAfter.Format(time.DateOnly))
	}
	return ca, nil
}

func createCA(f *Files, now time.Time) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsca: ca: %w", err)
	}
	name := "ferry CA"
	if h, err := os.Hostname(); err == nil {
		name += " " + h // tells apart the CAs of several servers in a trust store
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ferry"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	ca, err := sign(tmpl, key, nil)
	if err != nil {
		return nil, fmt.Errorf("tlsca: ca: %w", err)
	}
	if err := writePair(ca, f.CACert, f.CAKey); err != nil {
		return nil, fmt.Errorf("tlsca: ca: %w", err)
	}
	return ca, nil
}

// ensureServer keeps server.crt when it is this CA's, matches its key,
// names every wanted host and lives long enough; otherwise it issues one
// that also keeps the old names, since agents may already dial them.
func ensureServer(f *Files, ca *keyPair, want []string, now time.Time) error {
	old, err := loadPair(f.ServerCert, f.ServerKey)
	if err == nil && old.cert.CheckSignatureFrom(ca.cert) == nil {
		if missing := missingHosts(old.cert, want); len(missing) == 0 && old.cert.NotAfter.Sub(now) > renewBefore {
			return nil
		}
		want = mergeHosts(want, certHosts(old.cert))
	}
	leaf, err := issue(ca, want, now.Add(-backdate), now.Add(serverValidity))
	if err != nil {
		return fmt.Errorf("tlsca: server: %w", err)
	}
	if err := writePair(leaf, f.ServerCert, f.ServerKey); err != nil {
		return fmt.Errorf("tlsca: server: %w", err)
	}
	return nil
}

// issue signs a server certificate for hosts with a new key.
func issue(ca *keyPair, hosts []string, notBefore, notAfter time.Time) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "ferry server", Organization: []string{"ferry"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return sign(tmpl, key, ca)
}

// sign signs tmpl for key's public half by parent, or by key itself when
// parent is nil.
func sign(tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *keyPair) (*keyPair, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

// writePair writes the key before the certificate: the certificate is what
// marks the pair complete, and a key without it is replaced next start.
func writePair(p *keyPair, certPath, keyPath string) error {
	der, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return fsutil.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw}), 0o644)
}

func loadPair(certPath, keyPath string) (*keyPair, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ECDSA key", keyPath)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	return &keyPair{cert: cert, key: key}, nil
}

// serverHosts is hosts plus the names every server answers to locally,
// cleaned and without repeats.
func serverHosts(hosts []string) ([]string, error) {
	all := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	if h, err := os.Hostname(); err == nil {
		all = append(all, h)
	}
	var out []string
	for _, h := range all {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
			out = mergeHosts(out, []string{ip.String()})
			continue
		}
		if strings.ContainsAny(h, ":/ ") {
			return nil, ferry.Errorf(ferry.EINVALID, "tlsca: host %q: give a DNS name or an IP address, without scheme or port", h)
		}
		out = mergeHosts(out, []string{strings.ToLower(strings.TrimSuffix(h, "."))})
	}
	return out, nil
}

func certHosts(c *x509.Certificate) []string {
	hosts := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	return hosts
}

// missingHosts returns the hosts c does not name. IPs compare as IPs, so
// an IPv4 SAN stored in 16 bytes still counts.
func missingHosts(c *x509.Certificate, hosts []string) []string {
	var missing []string
	for _, h := range hosts {
		found := false
		if ip := net.ParseIP(h); ip != nil {
			found = slices.ContainsFunc(c.IPAddresses, ip.Equal)
		} else {
			found = slices.ContainsFunc(c.DNSNames, func(n string) bool { return strings.EqualFold(n, h) })
		}
		if !found {
			missing = append(missing, h)
		}
	}
	return missing
}

// mergeHosts appends the hosts of more that a is missing.
func mergeHosts(a, more []string) []string {
	for _, h := range more {
		if !slices.ContainsFunc(a, func(x string) bool { return strings.EqualFold(x, h) }) {
			a = append(a, h)
		}
	}
	return a
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// config loads the files into a client TLS configuration.
func (f TLSFiles) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.Cert != "" || f.Key != "" {
		if f.Cert == "" || f.Key == "" {
			return nil, fmt.Errorf("state/etcd: a client certificate needs both --etcd-cert and --etcd-key")
		}
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("state/etcd: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("state/etcd: CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("state/etcd: CA %s: no PEM certificate in it", f.CA)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

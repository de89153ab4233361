package tlsca

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
)

// Fingerprint is the hex sha256 of the DER bytes of the first certificate
// in caPEM: what an agent pins with --ca-sha256.
func Fingerprint(caPEM []byte) (string, error) {
	der, err := certDER(caPEM)
	if err != nil {
		return "", fmt.Errorf("tlsca: fingerprint: %w", err)
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return "", fmt.Errorf("tlsca: fingerprint: %w", err)
	}
	return fingerprint(der), nil
}

// PinnedClient is a client TLS config that trusts a server only if its
// chain holds the CA whose fingerprint is caSHA256 (hex, any case, colons
// allowed) and the leaf verifies against that CA alone for the name
// dialled. A CA certificate is public, so finding it in the chain proves
// nothing by itself: the leaf's signature must chain to it.
//
// TLS never sends an IP address as the server name, so when the server is
// dialled by IP the check cannot see the address and verifies the chain
// only. That still admits only certificates this server's own CA issued.
func PinnedClient(caSHA256 string) *tls.Config {
	pin := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(caSHA256), ":", ""))
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The standard check wants the CA in a root pool before dialling,
		// and an agent knows only its fingerprint; VerifyConnection does
		// the whole check instead, on resumed sessions too.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(pin, cs, time.Now())
		},
	}
}

func verifyPinned(pin string, cs tls.ConnectionState, now time.Time) error {
	if err := ferry.CheckSHA256(pin); err != nil {
		return fmt.Errorf("tlsca: --ca-sha256 is not 64 hex digits: %w", err)
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tlsca: the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	var root *x509.Certificate
	var seen []string
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		fp := fingerprint(c.Raw)
		if fp == pin {
			root = c
			continue
		}
		seen = append(seen, fp)
		inter.AddCert(c)
	}
	if root == nil {
		if len(seen) == 0 {
			return fmt.Errorf("tlsca: the server sent no CA certificate, so none matches --ca-sha256 %s (is this a ferry server, reached directly?)", pin)
		}
		return fmt.Errorf("tlsca: no CA in the server's chain matches --ca-sha256 %s (it sent %s); check the fingerprint with the server's operator", pin, strings.Join(seen, ", "))
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       cs.ServerName,
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tlsca: server certificate: %w", err)
	}
	return nil
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// certDER returns the first CERTIFICATE block of pemBytes.
func certDER(pemBytes []byte) ([]byte, error) {
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			return nil, errors.New("no PEM certificate")
		}
		if b.Type == "CERTIFICATE" {
			return b.Bytes, nil
		}
	}
}

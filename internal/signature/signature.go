// Package signature signs ferry release records with ed25519 and checks
// them against a set of trusted keys. A signature covers the release
// record: app, release number, artifact sha256 and config revision, so a
// host that trusts only its operators' keys runs exactly what they
// approved (the sha256 is checked on download, as always).
package signature

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// KeyType starts every public key line: "ferry-ed25519 BASE64 [comment]".
const KeyType = "ferry-ed25519"

// Signature is one signature of a release record (ferry.Signature, which
// the wire contract carries; its Valid checks it).
type Signature = ferry.Signature

// ReleaseMessage is the byte string a release signature covers.
func ReleaseMessage(app string, release int, sha256 string, configRev int) []byte {
	return fmt.Appendf(nil, "ferry release v1\napp %s\nrelease %d\nsha256 %s\nconfig %d\n", app, release, sha256, configRev)
}

// Generate makes a key pair and writes base.key (the private key, 0600) and
// base.pub (one public key line); it returns the public line.
func Generate(base, comment string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	for _, p := range []string{base + ".key", base + ".pub"} {
		if _, err := os.Stat(p); err == nil {
			return "", fmt.Errorf("%s exists: not overwriting a key", p)
		}
	}
	line := strings.TrimSpace(KeyType + " " + base64.StdEncoding.EncodeToString(pub) + " " + comment)
	privText := "# ferry signing key: keep it secret (ferry keygen)\n" + base64.StdEncoding.EncodeToString(priv.Seed()) + "\n"
	if err := fsutil.WriteFile(base+".key", []byte(privText), 0o600); err != nil {
		return "", err
	}
	if err := fsutil.WriteFile(base+".pub", []byte(line+"\n"), 0o644); err != nil {
		return "", err
	}
	return line, nil
}

// LoadPrivate reads a key written by Generate.
func LoadPrivate(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		seed, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("%s: not a ferry signing key (ferry keygen makes one)", path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	return nil, fmt.Errorf("%s: no key in it", path)
}

// LoadTrusted reads public key lines (a .pub file, or several
// concatenated); blank lines and # comments are skipped.
func LoadTrusted(path string) ([]ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []ed25519.PublicKey
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] != KeyType || len(f) < 2 {
			return nil, fmt.Errorf("%s:%d: want %q BASE64 [comment]", path, n, KeyType)
		}
		k, err := parsePublic(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no trusted key in it", path)
	}
	return keys, nil
}

func parsePublic(b64 string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not an ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

// Sign signs msg.
func Sign(priv ed25519.PrivateKey, msg []byte) Signature {
	pub := priv.Public().(ed25519.PublicKey)
	return Signature{Key: base64.StdEncoding.EncodeToString(pub), Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, msg))}
}

// KeyID is a short name of a public key, for messages.
func KeyID(b64 string) string {
	sum := sha256.Sum256([]byte(b64))
	return hex.EncodeToString(sum[:6])
}

// Verify succeeds when one of sigs is a good signature of msg by a trusted
// key, and says why not otherwise: unsigned, or signed only by other keys.
func Verify(trusted []ed25519.PublicKey, msg []byte, sigs []Signature) error {
	if len(sigs) == 0 {
		return errors.New("it is unsigned")
	}
	var others []string
	for _, s := range sigs {
		k, err := parsePublic(s.Key)
		if err != nil {
			continue
		}
		for _, t := range trusted {
			if t.Equal(k) {
				if s.Valid(msg) {
					return nil
				}
				return fmt.Errorf("its signature by trusted key %s does not match it (something else was signed)", KeyID(s.Key))
			}
		}
		others = append(others, KeyID(s.Key))
	}
	return fmt.Errorf("it is signed only by keys this host does not trust (%s)", strings.Join(others, ", "))
}

// FileMessage is the byte string a file's signature (FILE.sig, as ferry
// sign writes it) covers: the file's sha256.
func FileMessage(b []byte) []byte {
	sum := sha256.Sum256(b)
	return fmt.Appendf(nil, "ferry file v1\nsha256 %s\n", hex.EncodeToString(sum[:]))
}

// FormatSigLine is one line of a .sig file.
func FormatSigLine(s Signature) string { return KeyType + " " + s.Key + " " + s.Sig + "\n" }

// ParseSigFile reads the lines of a .sig file.
func ParseSigFile(b []byte) ([]Signature, error) {
	var out []Signature
	for n, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 3 || f[0] != KeyType {
			return nil, fmt.Errorf("line %d: want %q KEY SIGNATURE", n+1, KeyType)
		}
		out = append(out, Signature{Key: f[1], Sig: f[2]})
	}
	return out, nil
}

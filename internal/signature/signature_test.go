package signature

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSignAndVerify(t *testing.T) {
	dir := t.TempDir()
	line, err := Generate(filepath.Join(dir, "alice"), "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, KeyType+" ") || !strings.HasSuffix(line, " alice@example.com") {
		t.Fatalf("public line %q", line)
	}
	if fi, err := os.Stat(filepath.Join(dir, "alice.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("alice.key: %v %v", fi, err)
	}
	if _, err := Generate(filepath.Join(dir, "alice"), ""); err == nil {
		t.Fatal("Generate overwrote an existing key")
	}
	Generate(filepath.Join(dir, "mallory"), "")
	alice, err := LoadPrivate(filepath.Join(dir, "alice.key"))
	if err != nil {
		t.Fatal(err)
	}
	mallory, _ := LoadPrivate(filepath.Join(dir, "mallory.key"))
	trusted, err := LoadTrusted(filepath.Join(dir, "alice.pub"))
	if err != nil || len(trusted) != 1 || !trusted[0].Equal(alice.Public().(ed25519.PublicKey)) {
		t.Fatalf("LoadTrusted: %v %v", trusted, err)
	}

	msg := ReleaseMessage("hello", 3, strings.Repeat("ab", 32), 7)
	good := Sign(alice, msg)
	for _, tc := range []struct {
		name string
		msg  []byte
		sigs []Signature
		want string // "" for ok
	}{
		{"signed by a trusted key", msg, []Signature{good}, ""},
		{"also signed by another key", msg, []Signature{Sign(mallory, msg), good}, ""},
		{"unsigned", msg, nil, "unsigned"},
		{"signed by another key", msg, []Signature{Sign(mallory, msg)}, "keys this host does not trust"},
		{"another release", ReleaseMessage("hello", 4, strings.Repeat("ab", 32), 7), []Signature{good}, "does not match"},
		{"another config", ReleaseMessage("hello", 3, strings.Repeat("ab", 32), 8), []Signature{good}, "does not match"},
	} {
		err := Verify(trusted, tc.msg, tc.sigs)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}

	os.WriteFile(filepath.Join(dir, "bad.pub"), []byte("ssh-ed25519 AAAA x\n"), 0o644)
	if _, err := LoadTrusted(filepath.Join(dir, "bad.pub")); err == nil || !strings.Contains(err.Error(), "bad.pub:1") {
		t.Errorf("LoadTrusted of an ssh key: %v", err)
	}
	if _, err := LoadPrivate(filepath.Join(dir, "alice.pub")); err == nil {
		t.Error("LoadPrivate read a public key")
	}
}

package agent

import (
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/signature"
)

// TestSignedReleaseLabels: an agent with trusted keys reads the release
// number its signatures cover from the desired state's label as
// ferry.ParseRelease does, the way the CLI reads --release: v2, V2 and 2
// are release 2; a sign or a release directory's id is no release number.
func TestSignedReleaseLabels(t *testing.T) {
	keys := t.TempDir()
	if _, err := signature.Generate(filepath.Join(keys, "ops"), "ops"); err != nil {
		t.Fatal(err)
	}
	ops, err := signature.LoadPrivate(filepath.Join(keys, "ops.key"))
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := signature.LoadTrusted(filepath.Join(keys, "ops.pub"))
	if err != nil {
		t.Fatal(err)
	}
	r := &appRunner{a: &Agent{cfg: Config{TrustedKeys: trusted}}, name: "app"}
	sum := strings.Repeat("a", 64)
	sig := signature.Sign(ops, signature.ReleaseMessage("app", 2, sum, 4))
	for _, tc := range []struct {
		label string
		ok    bool
	}{
		{"v2", true}, {"V2", true}, {"2", true},
		{"+2", false}, {"v+2", false}, {"v2-1a2b3c4d", false}, {"", false}, {"v", false},
	} {
		err := r.checkSigned(&desired.App{Release: tc.label, SHA256: sum, ConfigRev: 4, Signatures: []signature.Signature{sig}})
		switch {
		case tc.ok && err != nil:
			t.Errorf("release %q: %v, want it run", tc.label, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "names no release number")):
			t.Errorf("release %q: %v, want it refused as no release number", tc.label, err)
		}
	}
}

// TestSignedReleaseNumber: a server's entry carries its release number,
// which the signature check uses; its label is for people.
func TestSignedReleaseNumber(t *testing.T) {
	pub, ops, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &appRunner{name: "app", a: &Agent{cfg: Config{TrustedKeys: []ed25519.PublicKey{pub}}}}
	sum := strings.Repeat("a", 64)
	sig := signature.Sign(ops, signature.ReleaseMessage("app", 2, sum, 4))
	if err := r.checkSigned(&desired.App{Release: "anything", Number: 2, SHA256: sum, ConfigRev: 4, Signatures: []signature.Signature{sig}}); err != nil {
		t.Errorf("an entry numbered 2: %v, want it run", err)
	}
	if err := r.checkSigned(&desired.App{Release: "v2", Number: 3, SHA256: sum, ConfigRev: 4, Signatures: []signature.Signature{sig}}); err == nil {
		t.Error("an entry numbered 3 ran on release 2's signature")
	}
}

package ferry

import (
	"crypto/ed25519"
	"encoding/base64"
	"maps"
	"slices"
)

// Masked stands for a config value wherever one is shown outside the host.
const Masked = "••••"

// Desired is the desired state of one host: what `ferry agent --desired`
// reads and what the server hands an agent. An app absent from Apps
// should not run there; an empty Desired means run nothing.
type Desired struct {
	Apps map[string]DesiredApp `json:"apps"`
}

// DesiredApp is one app a host should run.
type DesiredApp struct {
	Artifact string `json:"artifact"` // URL or plain path; the agent's fetch registry decides which schemes work
	SHA256   string `json:"sha256"`   // 64 lowercase hex digits
	// Release is the label shown in status: the server's "vN", or in a
	// desired-state file whatever its author wrote (default: the
	// artifact's version). Number is the server's release number, 0 in a
	// file: what signatures cover and rollouts compare.
	Release string `json:"release,omitempty"`
	Number  int    `json:"number,omitempty"`
	Group   string `json:"group,omitempty"` // the group it was deployed to, as FERRY_GROUP
	// ConfigRev and Signatures come from the server's release record, for
	// an agent that runs only signed releases.
	ConfigRev  int               `json:"config_rev,omitempty"`
	Signatures []Signature       `json:"signatures,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Scale      map[string]int    `json:"scale,omitempty"`
}

// Equal reports whether a and o ask for the same thing. A nil map equals an
// empty one, since both mean "nothing set".
func (a DesiredApp) Equal(o DesiredApp) bool {
	return a.Artifact == o.Artifact && a.SHA256 == o.SHA256 && a.Release == o.Release && a.Number == o.Number && a.Group == o.Group &&
		a.ConfigRev == o.ConfigRev && slices.Equal(a.Signatures, o.Signatures) &&
		maps.Equal(a.Env, o.Env) && maps.Equal(a.Scale, o.Scale)
}

// Equal reports whether d and o list the same apps with equal settings. A
// nil Desired equals an empty one.
func (d *Desired) Equal(o *Desired) bool {
	var a, b map[string]DesiredApp
	if d != nil {
		a = d.Apps
	}
	if o != nil {
		b = o.Apps
	}
	return maps.EqualFunc(a, b, DesiredApp.Equal)
}

// Signature is one ed25519 signature of a release record: the signer's
// public key and the signature, both base64.
type Signature struct {
	Key string `json:"key"`
	Sig string `json:"sig"`
}

// Valid reports whether s is a good signature of msg by its own key.
func (s Signature) Valid(msg []byte) bool {
	k, err := base64.StdEncoding.DecodeString(s.Key)
	if err != nil || len(k) != ed25519.PublicKeySize {
		return false
	}
	sig, err := base64.StdEncoding.DecodeString(s.Sig)
	return err == nil && ed25519.Verify(ed25519.PublicKey(k), msg, sig)
}

// Package manifest reads stretcher-compatible deploy manifests and applies
// them on this host: fetch, verify, unpack, sync into place, run hooks.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/template"

	"github.com/goccy/go-yaml"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/safeyaml"
)

// Sync strategies.
const (
	StrategyRsync   = "rsync"   // make dest match the archive, keeping excluded paths
	StrategyMv      = "mv"      // swap the unpacked tree in for dest
	StrategyRelease = "release" // dest/releases/<id> and an atomic dest/current
)

// DefaultDestMode is stretcher's.
const DefaultDestMode os.FileMode = 0o755

// Manifest is one deploy, as stretcher defines it plus ferry's release
// strategy fields.
type Manifest struct {
	Src          string   `yaml:"src"`
	Checksum     Text     `yaml:"checksum"`
	Dest         string   `yaml:"dest"`
	DestMode     Mode     `yaml:"dest_mode"`
	Commands     Commands `yaml:"commands"`
	Excludes     []string `yaml:"excludes"`
	ExcludeFrom  string   `yaml:"exclude_from"`
	SyncStrategy string   `yaml:"sync_strategy"`
	KeepReleases int      `yaml:"keep_releases"`
	Shared       []string `yaml:"shared"`
}

// Text is a scalar taken as written, so a checksum of digits stays a
// string instead of becoming a number.
type Text string

// UnmarshalYAML keeps the raw scalar, minus quotes.
func (t *Text) UnmarshalYAML(b []byte) error {
	s := strings.TrimSpace(string(b))
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		s = s[1 : len(s)-1]
	}
	*t = Text(s)
	return nil
}

// Commands are the hooks, each run with `sh -c`.
type Commands struct {
	Pre     []string `yaml:"pre"`     // after fetch, before unpack
	Post    []string `yaml:"post"`    // after sync (release: before the switch)
	Success []string `yaml:"success"` // the apply log on stdin
	Failure []string `yaml:"failure"` // the apply log on stdin
}

// Mode is a file mode written in octal, with or without the leading 0,
// quoted or not: dest_mode: 0751.
type Mode struct {
	Mode os.FileMode
	Set  bool
}

// UnmarshalYAML reads the raw scalar so 0751 and 751 both mean octal 751.
func (m *Mode) UnmarshalYAML(b []byte) error {
	s := strings.Trim(strings.TrimSpace(string(b)), `"'`)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return fmt.Errorf("%q is not an octal file mode like 0755", s)
	}
	m.Mode, m.Set = os.FileMode(v), true
	return nil
}

// Parse renders b as a template ({{ env "NAME" "default" }},
// {{ must_env "NAME" }}) and parses the result. Unknown fields are errors.
func Parse(b []byte) (*Manifest, error) {
	rendered, err := render(b)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "manifest")
	}
	m := &Manifest{}
	if err := safeyaml.Unmarshal(rendered, m, yaml.Strict()); err != nil {
		return nil, ferry.Errorf(ferry.EINVALID, "manifest: %s", yaml.FormatError(err, false, true))
	}
	if err := m.validate(); err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "manifest")
	}
	return m, nil
}

func (m *Manifest) validate() error {
	if !m.DestMode.Set {
		m.DestMode = Mode{Mode: DefaultDestMode}
	}
	if m.SyncStrategy == "" {
		m.SyncStrategy = StrategyRsync
	}
	switch m.SyncStrategy {
	case StrategyRsync, StrategyMv, StrategyRelease:
	default:
		return fmt.Errorf("sync_strategy: %q is not one of rsync, mv, release", m.SyncStrategy)
	}
	if m.Src == "" {
		return nil
	}
	if m.Dest == "" {
		return errors.New("dest: missing; say where to deploy, e.g. dest: /srv/app")
	}
	if m.Checksum == "" {
		return errors.New("checksum: missing; give the md5, sha1, sha256 or sha512 of src (ferry build writes it beside the artifact)")
	}
	if _, err := fetch.HashFor(strings.ToLower(string(m.Checksum))); err != nil {
		return fmt.Errorf("checksum: %w", err)
	}
	if m.KeepReleases == 0 {
		m.KeepReleases = 5
	}
	if m.KeepReleases < 2 {
		return fmt.Errorf("keep_releases: %d is too few; current and previous are always kept, so use 2 or more", m.KeepReleases)
	}
	if len(m.Shared) > 0 && m.SyncStrategy != StrategyRelease {
		return errors.New("shared: only works with sync_strategy: release")
	}
	return nil
}

func render(b []byte) ([]byte, error) {
	t, err := template.New("manifest").Option("missingkey=error").Funcs(template.FuncMap{
		"env": func(name string, def ...string) string {
			if v, ok := os.LookupEnv(name); ok {
				return v
			}
			if len(def) > 0 {
				return def[0]
			}
			return ""
		},
		"must_env": func(name string) (string, error) {
			if v, ok := os.LookupEnv(name); ok {
				return v, nil
			}
			return "", fmt.Errorf("environment variable %s is not set and the manifest requires it", name)
		},
	}).Parse(string(b))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := t.Execute(&out, nil); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

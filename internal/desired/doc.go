// Package desired reads the desired state of one host: which apps it should
// run, from which artifact, with which environment and scale. Parse is
// strict, so a typo is an error that names the app and field rather than a
// silently ignored key; Watch follows the document in a file or at a URL and
// hands each new version to the agent.
package desired

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/safeyaml"
	"github.com/ferrydeploy/ferry/internal/signature"
)

// Masked stands for a config value wherever one is shown outside the host.
const Masked = ferry.Masked

// Doc is the desired state of one host (ferry.Desired, the wire type).
type Doc = ferry.Desired

// App is one app the host should run.
type App = ferry.DesiredApp

// docYAML and appYAML are what the bytes decode into before checking: the
// leaf types keep scalars as written and reject what App would silently
// convert (a scale of 1.5, an env value that is a list).
type docYAML struct {
	Apps map[string]appYAML `yaml:"apps"`
}

type appYAML struct {
	Artifact text             `yaml:"artifact"`
	SHA256   text             `yaml:"sha256"`
	Release  text             `yaml:"release"`
	Group    text             `yaml:"group"`
	Env      map[string]text  `yaml:"env"`
	Scale    map[string]count `yaml:"scale"`
	// ConfigRev and Signatures, for an agent with trusted keys.
	ConfigRev  count `yaml:"config_rev"`
	Signatures []struct {
		Key text `yaml:"key"`
		Sig text `yaml:"sig"`
	} `yaml:"signatures"`
}

// Parse reads a desired-state document, YAML or JSON. Unknown fields are
// errors. An empty document and `apps: {}` are valid and mean "run
// nothing". Errors are ferry.EINVALID and list every problem found, each
// starting with the path of the field to fix, as in "apps.web.sha256: …".
func Parse(b []byte) (*Doc, error) {
	if err := checkSyntax(b); err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "desired state")
	}
	var y docYAML
	if err := safeyaml.Unmarshal(b, &y, yaml.Strict()); err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, explain(b, err), "desired state")
	}
	d := &Doc{Apps: make(map[string]App, len(y.Apps))}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(y.Apps)) {
		app, err := checkApp(name, y.Apps[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.Apps[name] = app
	}
	if len(errs) > 0 {
		return nil, ferry.WrapError(ferry.EINVALID, errors.Join(errs...), "desired state")
	}
	return d, nil
}

// checkApp turns what was decoded into an App, saying what to fix.
func checkApp(name string, y appYAML) (App, error) {
	p := "apps." + name
	a := App{
		Artifact: string(y.Artifact),
		SHA256:   strings.ToLower(string(y.SHA256)),
		Release:  string(y.Release),
		Group:    string(y.Group),
	}
	a.ConfigRev = int(y.ConfigRev)
	for _, sg := range y.Signatures {
		a.Signatures = append(a.Signatures, signature.Signature{Key: string(sg.Key), Sig: string(sg.Sig)})
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	// ferry's rules, as spec's, so every app a ferry.yaml can name fits here.
	if err := ferry.CheckAppName(name); err != nil {
		bad("%s: %v", p, err)
	}
	if a.Artifact == "" {
		bad("%s.artifact: missing; set the artifact's URL or path (file://…, https://…)", p)
	} else if _, err := url.Parse(a.Artifact); err != nil {
		bad("%s.artifact: not a valid URL: %v", p, errors.Unwrap(err))
	}
	if a.SHA256 == "" {
		bad("%s.sha256: missing; set the artifact's sha256 (64 hex digits, as `ferry build` and sha256sum print it)", p)
	} else if err := ferry.CheckSHA256(a.SHA256); err != nil {
		bad("%s.sha256: %v", p, err)
	}
	if len(y.Env) > 0 {
		a.Env = make(map[string]string, len(y.Env))
	}
	for _, k := range slices.Sorted(maps.Keys(y.Env)) {
		if !ferry.IsEnvName(k) {
			bad("%s.env: %q is not a valid variable name: use letters, digits and _, not starting with a digit", p, k)
		}
		a.Env[k] = string(y.Env[k])
	}
	if len(y.Scale) > 0 {
		a.Scale = make(map[string]int, len(y.Scale))
	}
	for _, k := range slices.Sorted(maps.Keys(y.Scale)) {
		n := int(y.Scale[k])
		if err := ferry.CheckProcessName(k); err != nil {
			bad("%s.scale: %v", p, err)
		} else if n < 0 {
			bad("%s.scale.%s: %d is negative; use 0 to run no instances", p, k, n)
		}
		a.Scale[k] = n
	}
	return a, errors.Join(errs...)
}

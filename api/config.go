package api

import (
	"time"

	"github.com/ferrydeploy/ferry"
)

// Config paths.
const (
	PathConfig        = "/v1/apps/{app}/config"         // GET ?group=G&rev=N → Config; PATCH ConfigChange → ConfigRevision
	PathConfigHistory = "/v1/apps/{app}/config/history" // GET → []ConfigRevision, newest first
	PathConfigDiff    = "/v1/apps/{app}/config/diff"    // GET ?from=N&to=M[&group=G] → []ConfigDiff
)

// Masked is what a secret's value reads as, everywhere it is shown.
const Masked = ferry.Masked

// ConfigChange is one change to an app's config: it makes a new revision.
// Group "" changes the app-wide values, which every group inherits and may
// override.
type ConfigChange struct {
	Group  string            `json:"group,omitempty"`
	Set    map[string]string `json:"set,omitempty"`
	Secret bool              `json:"secret,omitempty"` // the Set values are secrets
	Unset  []string          `json:"unset,omitempty"`
}

// ConfigRevision is what a config change recorded: never a value.
type ConfigRevision struct {
	App    string    `json:"app"`
	Rev    int       `json:"rev"`
	Group  string    `json:"group,omitempty"`
	Set    []string  `json:"set,omitempty"` // keys
	Secret bool      `json:"secret,omitempty"`
	Unset  []string  `json:"unset,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// ConfigVar is one variable as a group sees it.
type ConfigVar struct {
	Key    string `json:"key"`
	Value  string `json:"value"` // Masked for a secret
	Secret bool   `json:"secret,omitempty"`
	Scope  string `json:"scope"` // "app" (app-wide) or the group that overrides it
}

// Config is an app's config at a revision, for one group (or app-wide).
type Config struct {
	App   string      `json:"app"`
	Group string      `json:"group,omitempty"`
	Rev   int         `json:"rev"`
	Vars  []ConfigVar `json:"vars"`
}

// ConfigDiff is one variable that differs between two revisions.
type ConfigDiff struct {
	Key    string `json:"key"`
	Scope  string `json:"scope"`
	Change string `json:"change"` // added, removed, changed
	Old    string `json:"old,omitempty"`
	New    string `json:"new,omitempty"`
	Secret bool   `json:"secret,omitempty"`
}

// ScopeApp is the scope of app-wide values.
const ScopeApp = "app"

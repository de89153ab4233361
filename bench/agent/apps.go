package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Artifact is one `ferry build` of a bench app.
type Artifact struct {
	App     string `json:"app"`
	Version string `json:"version"`
	Path    string `json:"path"`
	SHA256  string `json:"sha256"`
}

// AppKind is what a bench app's process does to be ready.
type AppKind int

const (
	// Plain apps have no health check: the agent counts an instance
	// healthy once it has run MinUptime (1 s, supervise's default).
	Plain AppKind = iota
	// Probed apps have an exec health check (`true`, every 10 ms, healthy
	// after one success), so readiness is the first probe, not a timer.
	Probed
)

// appYAML is the ferry.yaml of a bench app. The process is ready at once:
// a shell script that execs sleep, so its own start time is that of sh.
func appYAML(name string, kind AppKind, scale int) string {
	health := ""
	if kind == Probed {
		health = "    health: {exec: \"true\", interval: 10ms, timeout: 1s, healthy: 1, unhealthy: 3}\n"
	}
	return fmt.Sprintf(`app: %s
build:
  command: "true"
include: [bin/]
processes:
  web:
    command: bin/serve
    scale: %d
    stop_timeout: 2s
%s`, name, scale, health)
}

// serveScript is the app's process; version makes each build's bytes (and
// so its sha256) differ.
func serveScript(version string) string {
	return "#!/bin/sh\n# bench app " + version + ": ready as soon as it runs\nexec sleep 100000\n"
}

// isInstance tells a bench app's process from the agent's other children
// (health probes run `sh -c true`) by its command line, at any step of
// `sh -c "exec bin/serve"` → `/bin/sh bin/serve` → `sleep 100000`.
func isInstance(cmdline []byte) bool {
	return bytes.Contains(cmdline, []byte("bin/serve")) || bytes.HasPrefix(cmdline, []byte("sleep\x00100000"))
}

// buildApp writes the app's source under work/src and builds it with
// `ferry build` into work/dist.
func buildApp(ctx context.Context, ferry, work, name, version string, kind AppKind, scale int) (Artifact, error) {
	src := filepath.Join(work, "src", name+"-"+version)
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		return Artifact{}, err
	}
	if err := os.WriteFile(filepath.Join(src, "ferry.yaml"), []byte(appYAML(name, kind, scale)), 0o644); err != nil {
		return Artifact{}, err
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "serve"), []byte(serveScript(version)), 0o755); err != nil {
		return Artifact{}, err
	}
	cmd := exec.CommandContext(ctx, ferry, "build", src, "--dist", filepath.Join(work, "dist"), "--version", version, "-o", "json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return Artifact{}, fmt.Errorf("ferry build %s: %w\n%s", src, err, errb.String())
	}
	var res struct{ Path, SHA256 string }
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.SHA256 == "" {
		return Artifact{}, fmt.Errorf("ferry build -o json: %v: %q", err, out.String())
	}
	return Artifact{App: name, Version: version, Path: res.Path, SHA256: res.SHA256}, nil
}

// desiredDoc is the desired-state document naming arts, one per app, in
// the order given.
func desiredDoc(arts []Artifact) string {
	if len(arts) == 0 {
		return "apps: {}\n"
	}
	var b strings.Builder
	b.WriteString("apps:\n")
	for _, a := range arts {
		fmt.Fprintf(&b, "  %s:\n    artifact: file://%s\n    sha256: %s\n    release: %s\n", a.App, a.Path, a.SHA256, a.Version)
	}
	return b.String()
}

// writeAtomic replaces path by rename, as an operator's tooling would.
func writeAtomic(path, doc string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

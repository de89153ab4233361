package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/ferrydeploy/ferry/internal/artifact"
)

// appName and group are what the bench deploys, and where.
const (
	appName = "fleet"
	group   = "fleet"
)

// Artifact is one build of the bench app.
type Artifact struct {
	Version string `json:"version"`
	Path    string `json:"path"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

// appYAML is the bench app: a process that is ready the moment it runs (a
// script that execs sleep) and a data file that makes the artifact big.
// No health check: the agent counts an instance healthy after MinUptime
// (1 s), so a thousand agents do not run a thousand probes.
func appYAML(scale int) string {
	return fmt.Sprintf(`app: %s
build:
  command: "true"
include: [bin/, data/]
keep_releases: 2
processes:
  web:
    command: bin/serve
    scale: %d
    stop_timeout: 2s
`, appName, scale)
}

// buildArtifacts builds deploys versions of the app, each with mb MiB of
// pseudo-random (incompressible) data of its own, so every release is a
// new download of the full size.
func buildArtifacts(ctx context.Context, dir string, mb, deploys, scale int) ([]Artifact, error) {
	var arts []Artifact
	for k := 1; k <= deploys; k++ {
		version := fmt.Sprintf("v%d", k)
		src := filepath.Join(dir, "src-"+version)
		for _, d := range []string{"bin", "data"} {
			if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
				return nil, err
			}
		}
		if err := os.WriteFile(filepath.Join(src, "ferry.yaml"), []byte(appYAML(scale)), 0o644); err != nil {
			return nil, err
		}
		script := "#!/bin/sh\n# bench/fleet " + version + "\nexec sleep 100000\n"
		if err := os.WriteFile(filepath.Join(src, "bin", "serve"), []byte(script), 0o755); err != nil {
			return nil, err
		}
		if err := writeRandom(filepath.Join(src, "data", "blob.bin"), int64(mb)<<20, uint64(k)); err != nil {
			return nil, err
		}
		r, err := artifact.Build(ctx, src, artifact.BuildOptions{Version: version, OutDir: filepath.Join(dir, "dist"), Output: io.Discard})
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", version, err)
		}
		arts = append(arts, Artifact{Version: version, Path: r.Path, SHA256: r.SHA256, Size: r.Size})
	}
	return arts, nil
}

// writeRandom writes n bytes from a ChaCha8 stream seeded with seed: the
// same bytes every run, and no compressor can shrink them.
func writeRandom(path string, n int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var s [32]byte
	s[0] = byte(seed)
	_, err = io.CopyN(w, rand.NewChaCha8(s), n)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

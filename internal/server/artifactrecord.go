package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// artifactRecord is an artifact as the state keeps it (repo.Artifact),
// appDeploy what its ferry.yaml says about deploying it.
type (
	artifactRecord = repo.Artifact
	appDeploy      = repo.DeployPolicy
)

// specFiles are the files an artifact record is made from.
var specFiles = []string{ferry.MetaPath, spec.FileName}

// newArtifactRecord makes the record of artifact sum from its files as
// a FileTap (or ReadFiles) of specFiles found them.
func newArtifactRecord(sum string, size int64, files map[string][]byte, readErr error) (artifactRecord, error) {
	if readErr != nil {
		return artifactRecord{}, ferry.WrapError(ferry.EINVALID, readErr, "not a ferry artifact")
	}
	b, ok := files[ferry.MetaPath]
	if !ok {
		return artifactRecord{}, ferry.Errorf(ferry.EINVALID, "not a ferry artifact: no %s (build it with ferry build)", ferry.MetaPath)
	}
	var m ferry.Meta
	if err := json.Unmarshal(b, &m); err != nil || m.App == "" {
		return artifactRecord{}, ferry.Errorf(ferry.EINVALID, "not a ferry artifact: bad %s", ferry.MetaPath)
	}
	pol := parseAppDeploy(files[spec.FileName])
	return artifactRecord{
		Artifact: api.Artifact{SHA256: sum, App: m.App, Version: m.Version, Commit: m.Commit, Dirty: m.Dirty, Size: size, OS: m.OS, Arch: m.Arch},
		Deploy:   &pol,
	}, nil
}

// parseAppDeploy reads the deploy: section of a ferry.yaml; nil b is an
// artifact without one.
func parseAppDeploy(b []byte) appDeploy {
	if b == nil {
		return appDeploy{NoSpec: true}
	}
	app, err := spec.Parse(b)
	if err != nil {
		return appDeploy{Invalid: err.Error()}
	}
	p := app.Deploy
	return appDeploy{Strategy: p.Strategy, Batch: p.Batch, Canary: p.Canary, AutoRollback: p.AutoRollback, HealthTimeout: p.HealthTimeout}
}

// inspectStored reads the blob at key once, to check that its sha256 is
// sum (ECORRUPT when not, as store.Verify) and to make its record: for
// bytes a failed upload or another server left under a key with no record.
func (s *Server) inspectStored(ctx context.Context, key, sum string) (artifactRecord, error) {
	rc, size, err := s.blobs.Open(ctx, key, 0)
	if err != nil {
		return artifactRecord{}, err
	}
	defer rc.Close()
	h := sha256.New()
	tap := artifact.NewFileTap(specFiles...)
	_, err = io.Copy(io.MultiWriter(h, tap), rc)
	files, readErr := tap.Done()
	if err != nil {
		if ctx.Err() != nil {
			return artifactRecord{}, ctx.Err()
		}
		return artifactRecord{}, fmt.Errorf("store: read %s: %w", key, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return artifactRecord{}, ferry.Errorf(ferry.ECORRUPT, "store: %s has sha256 %s, not %s: the stored object is corrupt", key, got, sum)
	}
	return newArtifactRecord(sum, size, files, readErr)
}

// deployPolicy is the deploy: section of the ferry.yaml of app's artifact
// sum, from its record. A record an older server made has none: the blob
// is read once and the record gets it.
func (s *Server) deployPolicy(ctx context.Context, app, sum string) (appDeploy, error) {
	rec, found, err := s.repo.Artifact(ctx, sum)
	if err != nil {
		return appDeploy{}, err
	}
	if found && rec.Deploy != nil {
		return *rec.Deploy, nil
	}
	rc, _, err := s.openBlob(ctx, app, sum, 0)
	if err != nil {
		return appDeploy{}, err
	}
	files, err := artifact.ReadFiles(rc, spec.FileName)
	rc.Close()
	if ctx.Err() != nil {
		return appDeploy{}, ctx.Err()
	}
	if err != nil {
		// What reading ferry.yaml at deploy time did with an artifact it
		// could not read: the server's defaults.
		return appDeploy{NoSpec: true}, nil
	}
	pol := parseAppDeploy(files[spec.FileName])
	if !found {
		return pol, nil // no record to keep it in (a release of a collected artifact)
	}
	_, err = s.repo.UpdateArtifact(ctx, sum, func(r *artifactRecord, exists bool) error {
		if !exists || r.Deploy != nil {
			return errSkip
		}
		r.Deploy = &pol
		return nil
	})
	return pol, err
}

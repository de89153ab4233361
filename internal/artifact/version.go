package artifact

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// gitInfo is what git says about the source tree being built.
type gitInfo struct {
	Commit   string
	Time     time.Time // commit time
	Dirty    bool      // uncommitted changes under the app's directory
	Describe string    // git describe --tags --always
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// readGit returns ok=false when dir is not in a git work tree with a commit.
func readGit(ctx context.Context, dir, outDir string) (gitInfo, bool) {
	var g gitInfo
	var err error
	if g.Commit, err = git(ctx, dir, "rev-parse", "HEAD"); err != nil {
		return gitInfo{}, false
	}
	if ct, err := git(ctx, dir, "log", "-1", "--format=%ct"); err == nil {
		if s, err := strconv.ParseInt(ct, 10, 64); err == nil {
			g.Time = time.Unix(s, 0)
		}
	}
	args := []string{"status", "--porcelain", "--", "."}
	if outDir != "" {
		args = append(args, ":(exclude)"+outDir)
	}
	st, err := git(ctx, dir, args...)
	g.Dirty = err != nil || st != ""
	g.Describe, _ = git(ctx, dir, "describe", "--tags", "--always")
	return g, true
}

// sourceTime is the mtime every packed entry gets: SOURCE_DATE_EPOCH when
// set, else the commit time, else the Unix epoch; never the wall clock, so
// builds are reproducible.
func sourceTime(g gitInfo) time.Time {
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		return time.Unix(s, 0).UTC()
	}
	if !g.Time.IsZero() {
		return g.Time.UTC()
	}
	return time.Unix(0, 0).UTC()
}

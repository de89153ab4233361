package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
	"github.com/ferrydeploy/ferry/internal/pathmatch"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// BuildOptions says what to build for and where to put the artifact.
type BuildOptions struct {
	OS, Arch string    // target; default linux/amd64
	Version  string    // default: git describe, with -dirty
	Format   string    // FormatZstd (default) or FormatGzip
	OutDir   string    // default DIR/dist
	Output   io.Writer // where the build command's output goes
}

// Result is a packed artifact.
type Result struct {
	Path   string
	Size   int64
	SHA256 string
	Meta   ferry.Meta
}

var (
	versionRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)
	packageMainRe = regexp.MustCompile(`(?m)^package main\b`)
)

// Build compiles and packs the app in dir into OutDir/<app>-<version>-<os>-<arch>.<format>
// and writes its sha256 beside it in sha256sum's format. The archive is
// written to a temporary file and renamed, so a failed build never leaves a
// half artifact under the final name.
func Build(ctx context.Context, dir string, opt BuildOptions) (*Result, error) {
	app, err := spec.Load(dir)
	if err != nil {
		return nil, err
	}
	if opt.OS == "" {
		opt.OS = "linux"
	}
	if opt.Arch == "" {
		opt.Arch = "amd64"
	}
	if opt.Format == "" {
		opt.Format = FormatZstd
	}
	if opt.Format != FormatZstd && opt.Format != FormatGzip {
		return nil, ferry.Errorf(ferry.EINVALID, "format %q: use %s or %s", opt.Format, FormatZstd, FormatGzip)
	}
	if opt.Output == nil {
		opt.Output = io.Discard
	}
	if opt.OutDir == "" {
		opt.OutDir = filepath.Join(dir, "dist")
	}
	outRel := ""
	if rel, err := filepath.Rel(dir, opt.OutDir); err == nil && !strings.HasPrefix(rel, "..") {
		outRel = filepath.ToSlash(rel)
	}
	g, inGit := readGit(ctx, dir, outRel)
	version := opt.Version
	if version == "" {
		version = "dev"
		if inGit {
			version = g.Describe
			if g.Dirty {
				version += "-dirty"
			}
		}
	}
	if !versionRe.MatchString(version) {
		return nil, ferry.Errorf(ferry.EINVALID, "version %q: use letters, digits, '.', '_', '+' and '-'", version)
	}
	meta := ferry.Meta{App: app.Name, Version: version, Commit: g.Commit, Dirty: g.Dirty, OS: opt.OS, Arch: opt.Arch, Built: sourceTime(g)}
	for _, p := range app.Processes {
		meta.Processes = append(meta.Processes, p.Name)
	}

	tmp, err := os.MkdirTemp("", "ferry-build-")
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer os.RemoveAll(tmp)
	env := append(os.Environ(), "GOOS="+opt.OS, "GOARCH="+opt.Arch, "FERRY_VERSION="+version)

	var entries []Entry
	goPkg := app.Build.Go
	if goPkg == "" && app.Build.Command == "" && hasMainPackage(dir) {
		goPkg = "."
	}
	switch {
	case goPkg != "":
		bin := path.Base(filepath.ToSlash(goPkg))
		if bin == "." || bin == "/" {
			bin = app.Name
		}
		out := filepath.Join(tmp, bin)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, goPkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, opt.Output, opt.Output
		cmd.Env = append(env, "CGO_ENABLED=0")
		if err := cmd.Run(); err != nil {
			return nil, ferry.WrapError(ferry.EINVALID, err, "build: go build %s failed (its output is above)", goPkg)
		}
		meta.GoVersion = runtime.Version()
		if v, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output(); err == nil {
			meta.GoVersion = strings.TrimSpace(string(v))
		}
		entries = append(entries, Entry{Name: "bin", Dir: true}, Entry{Name: "bin/" + bin, Src: out, Exec: true})
	case app.Build.Command != "":
		cmd := exec.CommandContext(ctx, "sh", "-c", app.Build.Command)
		cmd.Dir, cmd.Stdout, cmd.Stderr, cmd.Env = dir, opt.Output, opt.Output, env
		if err := cmd.Run(); err != nil {
			return nil, ferry.WrapError(ferry.EINVALID, err, "build: `%s` failed (its output is above)", app.Build.Command)
		}
	}

	files, err := collect(dir, app, outRel, goPkg != "")
	if err != nil {
		return nil, err
	}
	entries = mergeEntries(entries, files)
	mb, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, err
	}
	entries = append(entries, Entry{Name: ".ferry", Dir: true}, Entry{Name: ferry.MetaPath, Data: append(mb, '\n')})

	if err := os.MkdirAll(opt.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	// The target is in the name: builds of one version for two
	// architectures are two artifacts, side by side in dist/.
	final := filepath.Join(opt.OutDir, app.Name+"-"+version+"-"+opt.OS+"-"+opt.Arch+"."+opt.Format)
	res, err := packFile(final, entries, opt.Format, meta.Built)
	if err != nil {
		return nil, err
	}
	res.Meta = meta
	return res, nil
}

// packFile packs entries into final atomically, hashing as it writes.
func packFile(final string, entries []Entry, format string, mtime time.Time) (*Result, error) {
	f, err := fsutil.Create(final, 0o644)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer f.Abort()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := Pack(cw, entries, format, mtime); err != nil {
		return nil, err
	}
	if err := f.Commit(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := fsutil.WriteFile(final+".sha256", []byte(sum+"  "+filepath.Base(final)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	return &Result{Path: final, Size: cw.n, SHA256: sum}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func hasMainPackage(dir string) bool {
	names, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		b, err := os.ReadFile(n)
		if err == nil && packageMainRe.Match(b) {
			return true
		}
	}
	return false
}

// collect lists the source files to pack: ferry.yaml and Procfile always;
// then include: paths, or, for a command build without include:, the whole
// tree; minus exclude:, .git and the output directory.
func collect(dir string, app *ferry.App, outRel string, goBuild bool) ([]Entry, error) {
	excl, err := pathmatch.New(app.Exclude...)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "exclude")
	}
	skip := func(rel string, isDir bool) bool {
		return rel == ".git" || (outRel != "" && rel == outRel) || excl.Match(rel, isDir)
	}
	roots := []string{spec.FileName, spec.ProcfileName}
	switch {
	case len(app.Include) > 0:
		for _, inc := range app.Include {
			c := path.Clean(strings.TrimSuffix(filepath.ToSlash(inc), "/"))
			if path.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
				return nil, ferry.Errorf(ferry.EINVALID, "include: %q must be inside the app's directory", inc)
			}
			matches, _ := filepath.Glob(filepath.Join(dir, filepath.FromSlash(c)))
			if len(matches) == 0 && !(goBuild && (c == "bin")) {
				return nil, ferry.Errorf(ferry.EINVALID, "include: %q matches nothing in %s", inc, dir)
			}
			for _, m := range matches {
				rel, _ := filepath.Rel(dir, m)
				roots = append(roots, filepath.ToSlash(rel))
			}
		}
	case !goBuild:
		roots = append(roots, ".")
	}
	seen := map[string]bool{}
	var out []Entry
	add := func(rel, p string, fi fs.FileInfo) error {
		if seen[rel] {
			return nil
		}
		e, err := FileEntry(rel, p, fi)
		if err != nil {
			return ferry.WrapError(ferry.EINVALID, err, "collect")
		}
		seen[rel] = true
		out = append(out, e)
		return nil
	}
	for _, root := range roots {
		start := filepath.Join(dir, filepath.FromSlash(root))
		if _, err := os.Lstat(start); os.IsNotExist(err) && (root == spec.ProcfileName) {
			continue
		}
		err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			if rel == "." {
				return nil
			}
			if skip(rel, d.IsDir()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			// Parents of an included path are packed as directories.
			for par := path.Dir(rel); par != "."; par = path.Dir(par) {
				if !seen[par] {
					seen[par] = true
					out = append(out, Entry{Name: par, Dir: true})
				}
			}
			return add(rel, p, fi)
		})
		if err != nil {
			return nil, fmt.Errorf("collect: %w", err)
		}
	}
	return out, nil
}

// mergeEntries adds files to built, where a built entry wins over a source
// file of the same name (bin/hello built now beats a stale one on disk).
func mergeEntries(built, files []Entry) []Entry {
	have := map[string]bool{}
	for _, e := range built {
		have[e.Name] = true
	}
	for _, e := range files {
		if !have[e.Name] {
			built = append(built, e)
		}
	}
	sort.Slice(built, func(i, j int) bool { return built[i].Name < built[j].Name })
	return built
}

// FileSHA256 returns the hex sha256 of a file's bytes.
func FileSHA256(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Subject is one tool configuration under test.
type Subject struct {
	Tool     string // ferry | stretcher
	Strategy string // release | rsync
	Format   string // tar.gz | tar.zst
}

// Slug names the subject in flags and paths, e.g. ferry-release-gz.
func (s Subject) Slug() string {
	return s.Tool + "-" + s.Strategy + "-" + strings.TrimPrefix(s.Format, "tar.")
}

// AllSubjects are compared by default. Stretcher only reads what its
// `tar xf` can, so it gets gzip; ferry also gets zstd, its native format.
var AllSubjects = []Subject{
	{"ferry", "release", "tar.gz"},
	{"ferry", "release", "tar.zst"},
	{"ferry", "rsync", "tar.gz"},
	{"stretcher", "rsync", "tar.gz"},
}

// Sources and scenarios, in table order.
var (
	AllSources   = []string{"file", "http"}
	AllScenarios = []string{"fresh", "same", "changed"}
)

// scenarioDoc says what each scenario times.
var scenarioDoc = map[string]string{
	"fresh":   "apply artifact A into a missing dest",
	"same":    "re-apply A over a dest that already holds A",
	"changed": "apply B (10% of the small files and one large file differ) over a dest holding A",
}

// Row is the measurements of one subject × source × scenario.
type Row struct {
	Subject
	Source   string
	Scenario string
	Runs     []Measurement
}

// Bench runs the comparison in Work, a scratch directory it fills.
type Bench struct {
	Ferry     string
	Stretcher string
	Runs      int
	Sample    time.Duration
	Work      string
	Spec      Spec
	Subjects  []Subject
	Sources   []string
	Scenarios []string
	Progress  io.Writer

	artifacts map[string]*Artifact // by format + "/" + variant
	trees     [2]Tree
	httpBase  string
	baseline  int64 // KiB, see Baseline
}

// Prepare generates and packs both artifacts and starts the HTTP server,
// which lives until ctx is done.
func (b *Bench) Prepare(ctx context.Context) error {
	for _, d := range []string{"artifacts", "manifests", "dest", "tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(b.Work, d), 0o755); err != nil {
			return err
		}
	}
	b.artifacts = map[string]*Artifact{}
	formats := map[string]bool{}
	for _, s := range b.Subjects {
		formats[s.Format] = true
	}
	for v := range 2 {
		b.trees[v] = b.Spec.Generate(v)
		for _, f := range []string{"tar.gz", "tar.zst"} {
			if !formats[f] {
				continue
			}
			start := time.Now()
			p := filepath.Join(b.Work, "artifacts", fmt.Sprintf("app-%c.%s", 'A'+v, f))
			a, err := b.trees[v].Pack(p, f, b.Spec.Seed)
			if err != nil {
				return err
			}
			b.artifacts[artifactKey(f, v)] = a
			fmt.Fprintf(b.Progress, "packed %s: %d files, %.1f MiB unpacked, %.1f MiB packed, sha256 %s (%s)\n",
				filepath.Base(p), len(b.trees[v]), mib(b.trees[v].Bytes()), mib(a.Size), a.SHA256[:12], time.Since(start).Round(time.Millisecond))
		}
	}
	var err error
	if b.baseline, err = Baseline(ctx, filepath.Join(b.Work, "tmp")); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(filepath.Join(b.Work, "artifacts")))}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	b.httpBase = "http://" + ln.Addr().String()
	return nil
}

func artifactKey(format string, variant int) string { return fmt.Sprintf("%s/%d", format, variant) }

// Run measures every subject × source × scenario.
func (b *Bench) Run(ctx context.Context) ([]Row, error) {
	var rows []Row
	for _, sc := range b.Scenarios {
		for _, src := range b.Sources {
			for _, s := range b.Subjects {
				r, err := b.row(ctx, s, src, sc)
				if err != nil {
					return rows, fmt.Errorf("%s %s %s: %w", s.Slug(), src, sc, err)
				}
				rows = append(rows, r)
			}
		}
	}
	return rows, nil
}

func (b *Bench) row(ctx context.Context, s Subject, source, scenario string) (Row, error) {
	r := Row{Subject: s, Source: source, Scenario: scenario}
	dest := filepath.Join(b.Work, "dest", s.Slug()+"-"+source)
	applyA, err := b.command(s, source, 0, dest, "setup")
	if err != nil {
		return r, err
	}
	variant := 0
	if scenario == "changed" {
		variant = 1
	}
	timed, err := b.command(s, source, variant, dest, scenario)
	if err != nil {
		return r, err
	}
	setup := func() error {
		if err := removeAll(dest); err != nil {
			return err
		}
		if scenario == "fresh" {
			return nil
		}
		_, err := applyA.Run(ctx, 0)
		return err
	}
	for i := range b.Runs {
		if i == 0 || scenario != "same" { // re-applying A leaves dest as it was
			if err := setup(); err != nil {
				return r, fmt.Errorf("setup: %w", err)
			}
		}
		// Flush what setup wrote, so ferry's syncfs pays only for its own
		// writes. Twice: on a loop-mounted filesystem the first sync only
		// moves the data into the backing file's dirty pages.
		syscall.Sync()
		syscall.Sync()
		m, err := timed.Run(ctx, b.Sample)
		if err != nil {
			return r, err
		}
		r.Runs = append(r.Runs, m)
		fmt.Fprintf(b.Progress, "%-22s %-4s %-7s run %d/%d: %7.3fs  user %6.3fs  sys %6.3fs  maxrss %6.1f MiB  tree %6.1f MiB\n",
			s.Slug(), source, scenario, i+1, b.Runs, m.Wall.Seconds(), m.User.Seconds(), m.Sys.Seconds(), kib(m.MaxRSS), kib(m.TreeRSS))
		if i == 0 {
			if err := b.verify(s, dest, variant); err != nil {
				return r, err
			}
		}
	}
	return r, removeAll(dest)
}

// command is how s applies artifact variant from source into dest.
func (b *Bench) command(s Subject, source string, variant int, dest, label string) (Command, error) {
	a := b.artifacts[artifactKey(s.Format, variant)]
	src := "file://" + a.Path
	if source == "http" {
		src = b.httpBase + "/" + filepath.Base(a.Path)
	}
	var m strings.Builder
	fmt.Fprintf(&m, "src: %s\nchecksum: %s\ndest: %s\n", src, a.SHA256, dest)
	if s.Tool == "ferry" {
		fmt.Fprintf(&m, "sync_strategy: %s\n", s.Strategy)
	}
	name := fmt.Sprintf("%s-%s-%c", s.Slug(), source, 'A'+variant)
	mp := filepath.Join(b.Work, "manifests", name+".yml")
	if err := os.WriteFile(mp, []byte(m.String()), 0o644); err != nil {
		return Command{}, err
	}
	c := Command{
		Env: append(os.Environ(), "TMPDIR="+filepath.Join(b.Work, "tmp")),
		Dir: filepath.Join(b.Work, "tmp"),
		Log: filepath.Join(b.Work, "logs", name+"-"+label+".log"),
	}
	switch s.Tool {
	case "ferry":
		c.Args = []string{b.Ferry, "apply", mp}
	case "stretcher":
		c.Args, c.Stdin = []string{b.Stretcher}, "file://"+mp+"\n"
	default:
		return c, fmt.Errorf("unknown tool %q", s.Tool)
	}
	return c, nil
}

// verify checks that dest (or the release current names) holds exactly
// the files of artifact variant, byte for byte.
func (b *Bench) verify(s Subject, dest string, variant int) error {
	root := dest
	if s.Strategy == "release" {
		var err error
		if root, err = filepath.EvalSymlinks(filepath.Join(dest, "current")); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	want := b.artifacts[artifactKey(s.Format, variant)].Files
	got := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if e.Type()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(p)
			got[rel] = "-> " + t
			return err
		}
		sum, err := hashFile(p)
		got[rel] = sum
		return err
	})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	var bad []string
	for name, sum := range want {
		if got[name] != sum {
			bad = append(bad, name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			bad = append(bad, name+" (extra)")
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("verify %s: %d paths differ from the artifact, e.g. %s", root, len(bad), strings.Join(bad[:min(5, len(bad))], ", "))
	}
	return nil
}

// removeAll removes a tree even where ferry made it read-only.
func removeAll(dir string) error {
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
func kib(n int64) float64 { return float64(n) / (1 << 10) }

// Command apply benchmarks `ferry apply` against stretcher: the same
// generated ~100 MB artifact, read from file:// and from http:// on
// loopback, applied into a fresh dest, re-applied unchanged, and replaced by
// a changed artifact. It prints a markdown table of wall time, CPU and peak
// RSS. See bench/README.md.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == runnerArg {
		os.Exit(runChild(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/apply:", err)
		os.Exit(1)
	}
}

// Run parses args, runs the benchmark and writes the report to stdout and,
// with -out, to a file.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("apply", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var (
		b         = &Bench{Spec: DefaultSpec, Progress: stderr}
		out       = fl.String("out", "", "also write the markdown report to this file")
		work      = fl.String("work", "", "scratch directory (default: a new one under $TMPDIR, removed afterwards)")
		keep      = fl.Bool("keep", false, "keep the scratch directory")
		loopExt4  = fl.Int("loop-ext4", 0, "run in a fresh ext4 (with journal) of this many GiB, loop-mounted in the scratch directory (needs root, mkfs.ext4, mount)")
		subjects  = fl.String("subjects", "", "comma-separated subjects to run (default all: "+slugs(AllSubjects)+")")
		sources   = fl.String("sources", strings.Join(AllSources, ","), "comma-separated sources: file, http")
		scenarios = fl.String("scenarios", strings.Join(AllScenarios, ","), "comma-separated scenarios: fresh, same, changed")
	)
	fl.StringVar(&b.Ferry, "ferry", "/tmp/ferry-bench/ferry", "ferry binary")
	fl.StringVar(&b.Stretcher, "stretcher", "/tmp/stretcherbuild/stretcher", "stretcher binary")
	fl.IntVar(&b.Runs, "runs", 5, "timed runs per row")
	fl.DurationVar(&b.Sample, "sample", 20*time.Millisecond, "/proc sampling interval for the process-tree RSS (0: off)")
	fl.IntVar(&b.Spec.LargeFiles, "large-files", b.Spec.LargeFiles, "number of large incompressible files")
	large := fl.Int("large-mib", int(b.Spec.LargeSize>>20), "size of each large file in MiB")
	fl.IntVar(&b.Spec.SmallFiles, "small-files", b.Spec.SmallFiles, "number of small files (1–8 KiB)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	b.Spec.LargeSize = int64(*large) << 20
	var err error
	if b.Subjects, err = pickSubjects(*subjects); err != nil {
		return err
	}
	if b.Sources, err = pick(*sources, AllSources); err != nil {
		return err
	}
	if b.Scenarios, err = pick(*scenarios, AllScenarios); err != nil {
		return err
	}
	for _, p := range []*string{&b.Ferry, &b.Stretcher} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	for _, s := range b.Subjects {
		bin := map[string]string{"ferry": b.Ferry, "stretcher": b.Stretcher}[s.Tool]
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s binary: %w (see bench/README.md for how to build it)", s.Tool, err)
		}
	}

	b.Work = *work
	if b.Work == "" {
		if b.Work, err = os.MkdirTemp("", "ferry-bench-apply-"); err != nil {
			return err
		}
		if !*keep {
			defer removeAll(b.Work)
		}
	} else if b.Work, err = filepath.Abs(b.Work); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "scratch directory:", b.Work)
	if *loopExt4 > 0 {
		mnt, unmount, err := mountLoopExt4(ctx, b.Work, int64(*loopExt4)<<30)
		if err != nil {
			return err
		}
		defer unmount()
		b.Work = filepath.Join(mnt, "work")
		fmt.Fprintln(stderr, "loop-mounted ext4:", mnt)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the HTTP server
	if err := b.Prepare(ctx); err != nil {
		return err
	}
	rows, err := b.Run(ctx)
	if err != nil {
		return err
	}
	var md bytes.Buffer
	Report{Command: "go run ./bench/apply " + strings.Join(args, " "), Bench: b, Rows: rows, Date: time.Now()}.WriteMarkdown(&md)
	stdout.Write(md.Bytes())
	if *out != "" {
		return os.WriteFile(*out, md.Bytes(), 0o644)
	}
	return nil
}

// mountLoopExt4 makes an ext4 image of size bytes in dir and loop-mounts
// it; unmount also frees the loop device (mount -o loop sets autoclear).
func mountLoopExt4(ctx context.Context, dir string, size int64) (mnt string, unmount func(), err error) {
	img, mnt := filepath.Join(dir, "ext4.img"), filepath.Join(dir, "mnt")
	f, err := os.Create(img)
	if err != nil {
		return "", nil, err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", nil, err
	}
	for _, args := range [][]string{{"mkfs.ext4", "-q", "-F", img}, {"mount", "-o", "loop", img, mnt}} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	return mnt, func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "umount %s: %v: %s\n", mnt, err, out)
		}
	}, nil
}

func slugs(ss []Subject) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Slug())
	}
	return strings.Join(out, ",")
}

func pickSubjects(list string) ([]Subject, error) {
	if list == "" {
		return AllSubjects, nil
	}
	var out []Subject
	for _, name := range strings.Split(list, ",") {
		found := false
		for _, s := range AllSubjects {
			if s.Slug() == strings.TrimSpace(name) {
				out, found = append(out, s), true
			}
		}
		if !found {
			return nil, fmt.Errorf("-subjects: unknown %q (known: %s)", name, slugs(AllSubjects))
		}
	}
	return out, nil
}

func pick(list string, known []string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		ok := false
		for _, k := range known {
			ok = ok || k == name
		}
		if !ok {
			return nil, fmt.Errorf("unknown %q (known: %s)", name, strings.Join(known, ", "))
		}
		out = append(out, name)
	}
	return out, nil
}

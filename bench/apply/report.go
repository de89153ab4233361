package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry/bench/internal/host"
)

// Report is the markdown the bench prints.
type Report struct {
	Command string
	Bench   *Bench
	Rows    []Row
	Date    time.Time
}

// WriteMarkdown writes the machine facts, the artifacts, the table and
// whether the goal is met.
func (r Report) WriteMarkdown(w io.Writer) {
	b := r.Bench
	fmt.Fprintf(w, "Command: `%s`\n\n", r.Command)
	fmt.Fprintf(w, "Machine: %s\n\n", strings.Join(machineFacts(b.Work), "; "))
	fmt.Fprintf(w, "Binaries: %s\n\n", strings.Join(binaryFacts(b), "; "))
	fmt.Fprintf(w, "Date (end of run): %s\n\n", r.Date.UTC().Format(time.UnixDate))
	for v, t := range b.trees {
		var packed []string
		for _, f := range []string{"tar.gz", "tar.zst"} {
			if a := b.artifacts[artifactKey(f, v)]; a != nil {
				packed = append(packed, fmt.Sprintf("%s %.1f MiB (sha256 %s…)", f, mib(a.Size), a.SHA256[:12]))
			}
		}
		fmt.Fprintf(w, "Artifact %c: %d entries (%d large files of %.0f MiB, %d files of %d–%d bytes in %d directories, 1 symlink), %.1f MiB unpacked; %s\n\n",
			'A'+v, len(t), b.Spec.LargeFiles, mib(b.Spec.LargeSize), b.Spec.SmallFiles, b.Spec.SmallMin, b.Spec.SmallMax, t.Dirs(),
			mib(t.Bytes()), strings.Join(packed, ", "))
	}
	fmt.Fprintf(w, "Scenarios: ")
	var docs []string
	for _, sc := range b.Scenarios {
		docs = append(docs, fmt.Sprintf("**%s** %s", sc, scenarioDoc[sc]))
	}
	fmt.Fprintf(w, "%s. Each is run %d times; dest is reset (untimed) before each run and `sync` is called so no run flushes another's writes.\n\n", strings.Join(docs, "; "), b.Runs)

	fmt.Fprintln(w, "| tool | strategy | archive | source | scenario | min wall | median wall | user / sys CPU (fastest run) | peak RSS, max process | peak RSS, tree sum (sampled) | per process peak (sampled) | time vs stretcher | RSS vs stretcher |")
	fmt.Fprintln(w, "|---|---|---|---|---|--:|--:|--:|--:|--:|---|--:|--:|")
	for _, row := range r.Rows {
		s := summarize(row)
		ref := r.stretcher(row.Source, row.Scenario)
		tvs, mvs := "", ""
		if ref != nil && row.Tool != "stretcher" {
			rs := summarize(*ref)
			tvs = fmt.Sprintf("%.2f×", s.minWall.Seconds()/rs.minWall.Seconds())
			mvs = fmt.Sprintf("%.2f×", float64(s.maxRSS)/float64(rs.maxRSS))
		}
		tree := "— (too short to sample)"
		if s.treeRSS > 0 {
			tree = fmt.Sprintf("%.1f MiB", kib(s.treeRSS))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.1f MiB | %s | %s | %s | %s |\n",
			row.Tool, row.Strategy, row.Format, row.Source, row.Scenario,
			secs(s.minWall), secs(s.medWall), secs(s.user)+" / "+secs(s.sys), kib(s.maxRSS), tree, perProcess(s.perProc), tvs, mvs)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Peak RSS, max process: ru_maxrss from wait4(2), which on Linux covers the process and every descendant it waited for (stretcher's tar and rsync) and is the largest single process, not a sum; tools are started through a small runner so it is not inflated by the bench's own memory (its floor, measured on `true`, is %.1f MiB). Tree sum: VmRSS of all processes of the run added up, sampled every %s (rsync runs three processes at once). Per process: VmHWM by command name, as last sampled.\n\n", kib(b.baseline), b.Sample)
	r.writeGoal(w)
}

// writeGoal says, per source × scenario, whether ferry's release strategy
// takes at most half of stretcher's time and no more memory.
func (r Report) writeGoal(w io.Writer) {
	fmt.Fprintln(w, "Goal: ferry `release` takes at most half of stretcher's time and never more memory (peak RSS, max process and tree sum). It is judged on tar.gz, the artifact both tools get; the tar.zst lines (ferry's native format, same tree) are for reference.")
	fmt.Fprintln(w)
	for _, row := range r.Rows {
		if row.Tool != "ferry" || row.Strategy != "release" {
			continue
		}
		ref := r.stretcher(row.Source, row.Scenario)
		if ref == nil {
			continue
		}
		f, s := summarize(row), summarize(*ref)
		timeOK := f.minWall.Seconds() <= s.minWall.Seconds()/2
		memOK := f.maxRSS <= s.maxRSS && (f.treeRSS == 0 || f.treeRSS <= s.treeRSS)
		verdict := "met"
		switch {
		case !timeOK && !memOK:
			verdict = "NOT met (time and memory)"
		case !timeOK:
			verdict = "NOT met (time)"
		case !memOK:
			verdict = "NOT met (memory)"
		}
		note := ""
		if row.Scenario == "same" {
			note = " — a no-op by design: the release with this sha256 is already current"
		}
		fmt.Fprintf(w, "- %s, %s, %s: %s vs %s (%.2f×), %.1f vs %.1f MiB max process, %.1f vs %.1f MiB tree: **%s**%s\n",
			row.Format, row.Source, row.Scenario, secs(f.minWall), secs(s.minWall), f.minWall.Seconds()/s.minWall.Seconds(),
			kib(f.maxRSS), kib(s.maxRSS), kib(f.treeRSS), kib(s.treeRSS), verdict, note)
	}
	fmt.Fprintln(w)
}

func (r Report) stretcher(source, scenario string) *Row {
	for i, row := range r.Rows {
		if row.Tool == "stretcher" && row.Source == source && row.Scenario == scenario {
			return &r.Rows[i]
		}
	}
	return nil
}

type summary struct {
	minWall, medWall time.Duration
	user, sys        time.Duration // of the fastest run
	maxRSS, treeRSS  int64
	perProc          map[string]int64
}

func summarize(r Row) summary {
	s := summary{perProc: map[string]int64{}}
	var walls []time.Duration
	for _, m := range r.Runs {
		if len(walls) == 0 || m.Wall < slices.Min(walls) {
			s.user, s.sys = m.User, m.Sys
		}
		walls = append(walls, m.Wall)
		s.maxRSS = max(s.maxRSS, m.MaxRSS)
		s.treeRSS = max(s.treeRSS, m.TreeRSS)
		for k, v := range m.PerProcess {
			s.perProc[k] = max(s.perProc[k], v)
		}
	}
	slices.Sort(walls)
	if len(walls) > 0 {
		s.minWall, s.medWall = walls[0], walls[len(walls)/2]
	}
	return s
}

func perProcess(m map[string]int64) string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return int(m[b] - m[a]) })
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f", n, kib(m[n])))
	}
	return strings.Join(parts, ", ")
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

// machineFacts describes the machine and the tools' versions.
func machineFacts(work string) []string {
	f := host.Read()
	facts := []string{fmt.Sprintf("nproc %d", f.NProc)}
	if f.Model != "" {
		facts = append(facts, f.Model)
	}
	if f.Memory != "" {
		facts = append(facts, "memory "+f.Memory)
	}
	if f.Kernel != "" {
		facts = append(facts, f.Kernel)
	}
	facts = append(facts, firstLine(runtime.Version(), "go", "version"))
	facts = append(facts, firstLine("rsync ?", "rsync", "--version"), firstLine("tar ?", "tar", "--version"))
	if fstype, dev := host.Mount(work); fstype != "" {
		facts = append(facts, "work dir on "+fstype+" ("+dev+journal(fstype, dev)+")")
	}
	return facts
}

// binaryFacts names the binaries compared by path and sha256, since both
// are usually built from a working tree.
func binaryFacts(b *Bench) []string {
	var out []string
	for _, p := range []string{b.Ferry, b.Stretcher} {
		sum, err := hashFile(p)
		if err != nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s (sha256 %s…)", p, sum[:12]))
	}
	return out
}

func firstLine(fallback, name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return fallback
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.Join(strings.Fields(line), " ")
}

// journal says whether an ext4 filesystem has a journal: without one,
// ext4 skips recently deleted inodes when allocating, which makes creating
// files right after deleting many of them slow (see bench/README.md).
func journal(fstype, dev string) string {
	if fstype != "ext4" {
		return ""
	}
	b, err := os.ReadFile("/sys/fs/ext4/" + filepath.Base(dev) + "/journal_task")
	switch {
	case err != nil:
		return ""
	case strings.TrimSpace(string(b)) == "<none>":
		return ", no journal"
	}
	return ", journal"
}

package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry/bench/internal/host"
)

// Results is everything the bench measured, as written to -out.
type Results struct {
	Command   string      `json:"command"`
	Date      time.Time   `json:"date"`
	Machine   Machine     `json:"machine"`
	Limits    Limits      `json:"limits"`
	Options   Options     `json:"options"`
	Artifacts []Artifact  `json:"artifacts"`
	Runs      []RunResult `json:"runs"`
}

// Machine is where the bench ran.
type Machine struct {
	host.Facts
	Source string `json:"source"` // git describe of the module
}

func machineFacts(dir string) Machine {
	m := Machine{Facts: host.Read()}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Source = strings.TrimSpace(string(out))
	}
	return m
}

func (m Machine) String() string {
	parts := m.Parts()
	if m.Source != "" {
		parts = append(parts, "ferry at "+m.Source)
	}
	return strings.Join(parts, "; ")
}

// WriteMarkdown prints the facts and one table per measure.
func (r *Results) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "Command: `%s`\n\n", r.Command)
	fmt.Fprintf(w, "Machine: %s\n\n", r.Machine)
	fmt.Fprintf(w, "Date (end of run): %s\n\n", r.Date.Format(time.UnixDate))
	fmt.Fprintf(w, "Limits: open files %d (hard %d), processes %d, pid_max %s\n\n", r.Limits.NoFile, r.Limits.NoFileHard, r.Limits.NProc, r.Limits.PIDMax)
	for _, a := range r.Artifacts {
		fmt.Fprintf(w, "- artifact %s: %.1f MiB (sha256 %.12s…)\n", a.Version, float64(a.Size)/(1<<20), a.SHA256)
	}
	where := "one server and N agents in one process"
	if r.Options.ServerBin != "" {
		where = "the server (`ferry server`, its own process) and N agents in one process"
	}
	store := "the server's directory store, downloads through the server"
	switch {
	case r.Options.Direct:
		store = "an S3 bucket (versitygw, its own process), agents download from it with signed URLs (`--direct-download`)"
	case r.Options.S3:
		store = "an S3 bucket (versitygw, its own process), downloads through the server"
	}
	fmt.Fprintf(w, "\nSetup: %s on loopback (TLS, each agent its own client and credential, its own root); artifacts in %s; agent cache %d MiB; app `%s` with %d instance(s) per agent of `exec sleep 100000`, no health check (healthy after the agent's 1 s MinUptime); `deploy --strategy all`.\n\n", where, store, r.Options.CacheMB, appName, r.Options.Scale)
	if r.Options.ServerBin != "" || r.Options.S3 {
		r.writeTransfer(w)
	}

	fmt.Fprintln(w, "| agents | join all | up → all reported | release | deploy → all healthy | desired state reached agents after the deploy call returned: p50 / p99 / max | host healthy (server's view) p50 / p99 / max | downloads: server throughput | one download p50 / p99 | CPU of the process | load before → after |")
	fmt.Fprintln(w, "|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|---|")
	for _, run := range r.Runs {
		if len(run.Deploys) == 0 {
			fmt.Fprintf(w, "| %d | %s | %s | — | — | — | — | — | — | — | — |\n", run.Agents, secs(run.Join), secs(run.ToReported))
		}
		for i, d := range run.Deploys {
			join, up := secs(run.Join), secs(run.ToReported)
			if i > 0 {
				join, up = "", ""
			}
			dl := "—"
			if d.Downloads.Count > 0 {
				dl = fmt.Sprintf("%.0f MiB/s (%d × %.1f MiB in %s)", d.Downloads.MBps, d.Downloads.Count, float64(d.Downloads.Bytes)/float64(d.Downloads.Count)/(1<<20), secs(d.Downloads.Span))
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s (release %d) | %s | %s / %s / %s | %s / %s / %s | %s | %s / %s | %s | %s → %s |\n",
				run.Agents, join, up, d.Version, d.Release, secs(d.ToAllHealthy),
				msec(d.Propagation.P50), msec(d.Propagation.P99), msec(d.Propagation.Max),
				secs(d.HostHealthy.P50), secs(d.HostHealthy.P99), secs(d.HostHealthy.Max),
				dl, secs(d.Downloads.Each.P50), secs(d.Downloads.Each.P99), secs(d.CPU), d.LoadBefore, d.LoadAfter)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| agents | phase | process RSS / peak | threads | goroutines | fds | app processes (RSS) | load |")
	fmt.Fprintln(w, "|--:|---|--:|--:|--:|--:|--:|---|")
	for _, run := range r.Runs {
		row := func(phase string, s Snapshot) {
			if s.Load == "" {
				return
			}
			fmt.Fprintf(w, "| %d | %s | %.0f / %.0f MiB | %d | %d | %d | %d (%.0f MiB) | %s |\n", run.Agents, phase,
				float64(s.RSSKiB)/1024, float64(s.HWMKiB)/1024, s.Threads, s.Goroutines, s.FDs, s.Children, float64(s.ChildRSSKiB)/1024, s.Load)
		}
		row("all up, nothing deployed", run.Before)
		for _, d := range run.Deploys {
			row("after "+d.Version, d.After)
		}
	}
	fmt.Fprintln(w)
	for _, run := range r.Runs {
		fmt.Fprintf(w, "- %d agents: stopping every agent and its apps took %s; %d processes left over", run.Agents, secs(run.Stop), run.Leftover)
		if run.Errors > 0 {
			fmt.Fprintf(w, "; %d failed desired queries or reports (first: %s)", run.Errors, strings.Join(run.ErrorSamples, "; "))
		}
		for _, d := range run.Deploys {
			fmt.Fprintf(w, "; %s: deploy call %s, from sending it to each agent's document p50 %s / p99 %s, %s more per host in name order (R² %.2f)",
				d.Version, msec(d.Request), msec(d.FromSend.P50), msec(d.FromSend.P99), msec(d.PerHostSlope), d.PerHostR2)
		}
		if run.Err != "" {
			fmt.Fprintf(w, "; **error: %s**", run.Err)
		}
		fmt.Fprintln(w)
	}
}

func secs(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func msec(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// writeTransfer is the fan-out table: what each deploy moved and what it
// cost the server and the bucket.
func (r *Results) writeTransfer(w io.Writer) {
	fmt.Fprintln(w, "| agents | release | deploy → all healthy | agents downloaded | server CPU | server wrote | S3 CPU | S3 wrote | bench process CPU |")
	fmt.Fprintln(w, "|--:|---|--:|--:|--:|--:|--:|--:|--:|")
	for _, run := range r.Runs {
		for _, d := range run.Deploys {
			fmt.Fprintf(w, "| %d | %s (release %d) | %s | %d × = %.2f GiB | %s | %.2f GiB | %s | %.2f GiB | %s |\n", run.Agents, d.Version, d.Release,
				secs(d.ToAllHealthy), d.Downloads.Count, gib(d.Downloads.Bytes), secs(d.Server.CPU), gib(d.Server.Wrote), secs(d.S3.CPU), gib(d.S3.Wrote), secs(d.CPU))
		}
	}
	fmt.Fprintln(w)
}

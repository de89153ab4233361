package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// writeReport prints the results as markdown: a summary, a latency table
// across subjects, then each run in detail.
func writeReport(w io.Writer, cfg config, res *Results) {
	fmt.Fprintf(w, "# Zero downtime: %s\n\n", res.Date)
	fmt.Fprintf(w, "Machine: %s  \nCommand: `%s`  \nLoad: %.0f req/s open loop + %d closed-loop workers + %d slow (%d ms) workers; %d upgrades per run, spacing %v–%v, scale %d, bad releases: %v\n\n",
		res.Machine, res.Command, cfg.Load.Rate, cfg.Load.Workers, cfg.Load.SlowWorkers, cfg.Load.SlowMS,
		cfg.Upgrades, cfg.SpacingMin, cfg.SpacingMax, cfg.Scale, cfg.Bad)

	fmt.Fprintln(w, "| subject | expected | verdict | as expected | runs | requests | failed | "+strings.Join(classes[1:], " | ")+" | open loop: failed / sent | upgrades | leaked | agent fds before→after |")
	fmt.Fprintln(w, "|---|---|---|---|--:|--:|--:|"+strings.Repeat("--:|", len(classes)-1)+"--:|--:|--:|---|")
	for _, s := range res.Subjects {
		byClass := map[string]int{}
		req, ups, leaked, open, openFailed := 0, 0, 0, 0, 0
		var fds []string
		for _, r := range s.Runs {
			for _, c := range r.Clients {
				req += c.Requests
				open += c.OpenRequests
				openFailed += c.OpenFailed
				for k, n := range c.Classes {
					byClass[k] += n
				}
			}
			ups += len(r.Upgrades)
			leaked += len(r.Leaked)
			if r.FDsBefore != 0 || r.FDsAfter != 0 {
				fds = append(fds, fmt.Sprintf("%d→%d", r.FDsBefore, r.FDsAfter))
			}
		}
		expect := s.Expect
		if expect == "" {
			expect = "(compare)"
		}
		as := "yes"
		if !s.AsExpected {
			as = "**NO**"
		}
		cols := make([]string, 0, len(classes)-1)
		for _, c := range classes[1:] {
			cols = append(cols, fmt.Sprint(byClass[c]))
		}
		fmt.Fprintf(w, "| %s | %s | **%s** | %s | %d | %d | %d | %s | %s | %d | %d | %s |\n",
			s.Name, expect, s.Verdict, as, len(s.Runs), req, req-byClass[classOK], strings.Join(cols, " | "), rate(openFailed, open), ups, leaked, dashIfEmpty(strings.Join(fds, ", ")))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "Latency of ok answers while upgrading (ms; p50 is the median over runs, p99 and max the worst run):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| subject | "+strings.Join(clientNames, " | ")+" |")
	fmt.Fprintln(w, "|---|"+strings.Repeat("--:|", len(clientNames)))
	for _, s := range res.Subjects {
		cols := make([]string, 0, len(clientNames))
		for _, n := range clientNames {
			var p50s []float64
			var p99, mx float64
			for _, r := range s.Runs {
				if c := r.Clients[n]; c != nil && c.Supported && c.Classes[classOK] > 0 {
					p50s = append(p50s, c.P50MS)
					p99, mx = max(p99, c.P99MS), max(mx, c.MaxMS)
				}
			}
			if len(p50s) == 0 {
				cols = append(cols, "—")
				continue
			}
			slices.Sort(p50s)
			cols = append(cols, fmt.Sprintf("%.2f / %.2f / %.0f", p50s[len(p50s)/2], p99, mx))
		}
		fmt.Fprintf(w, "| %s | %s |\n", s.Name, strings.Join(cols, " | "))
	}
	fmt.Fprintln(w)

	for _, s := range res.Subjects {
		fmt.Fprintf(w, "## %s — %s\n\n", s.Name, s.Verdict)
		if s.Note != "" {
			fmt.Fprintf(w, "%s\n\n", s.Note)
		}
		for i, r := range s.Runs {
			writeRun(w, i+1, r)
		}
	}
}

func writeRun(w io.Writer, n int, r *Run) {
	fmt.Fprintf(w, "### run %d — %s", n, r.Verdict)
	if len(r.Why) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(r.Why, "; "))
	}
	fmt.Fprintf(w, "\n\n%.1f s of load, %d upgrades", r.LoadSecs, len(r.Upgrades))
	outcomes := map[string]int{}
	var secs []float64
	for _, u := range r.Upgrades {
		key := u.Outcome
		if u.Bad != "" {
			key = u.Bad + " → " + u.Outcome
		}
		outcomes[key]++
		secs = append(secs, u.Secs)
	}
	if len(secs) > 0 {
		slices.Sort(secs)
		var parts []string
		for _, k := range sortedKeys(outcomes) {
			parts = append(parts, fmt.Sprintf("%s %d", k, outcomes[k]))
		}
		fmt.Fprintf(w, " (%s; each took %.2f s median, %.2f s max)", strings.Join(parts, ", "), secs[len(secs)/2], secs[len(secs)-1])
	}
	fmt.Fprintf(w, "; %d versions up, %d of them never answered", len(r.Expected), len(r.Unserved))
	for _, v := range sortedKeys(r.Strays) {
		fmt.Fprintf(w, "; **%s, never up, answered %d requests**", v, r.Strays[v])
	}
	if r.FDsBefore != 0 || r.FDsAfter != 0 {
		fmt.Fprintf(w, "; agent fds %d → %d", r.FDsBefore, r.FDsAfter)
	}
	if len(r.AgentUpgrades) > 0 {
		fmt.Fprintf(w, "; agent upgraded itself %d times (%s)", len(r.AgentUpgrades), strings.Join(r.AgentUpgrades, ", "))
	}
	if len(r.AgentRestarts) > 0 {
		fmt.Fprintf(w, "; agent stopped or killed and started again %d times (%s)", len(r.AgentRestarts), strings.Join(r.AgentRestarts, ", "))
	}
	fmt.Fprintf(w, "; leaked processes: %d\n\n", len(r.Leaked))
	fmt.Fprintln(w, "| client | requests | "+strings.Join(classes, " | ")+" | open loop: failed / sent | retried | versions | p50 ms | p99 ms | max ms |")
	fmt.Fprintln(w, "|---|--:|"+strings.Repeat("--:|", len(classes))+"--:|--:|--:|--:|--:|--:|")
	var notes []string
	for _, name := range clientNames {
		c := r.Clients[name]
		if c == nil {
			continue
		}
		if !c.Supported {
			fmt.Fprintf(w, "| %s | not run: %s |%s\n", name, strings.ReplaceAll(c.Unsupported, "|", "/"), strings.Repeat(" |", len(classes)+6))
			continue
		}
		cols := make([]string, 0, len(classes))
		for _, k := range classes {
			cols = append(cols, fmt.Sprint(c.Classes[k]))
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %d | %d | %.2f | %.2f | %.1f |\n", name, c.Requests, strings.Join(cols, " | "), rate(c.OpenFailed, c.OpenRequests), c.Retries, len(c.Versions), c.P50MS, c.P99MS, c.MaxMS)
		for _, k := range sortedKeys(c.Samples) {
			notes = append(notes, fmt.Sprintf("- %s, %s: %s", name, k, strings.Join(c.Samples[k], " · ")))
		}
	}
	fmt.Fprintln(w)
	if len(notes) > 0 {
		fmt.Fprintf(w, "Failure samples:\n\n%s\n\n", strings.Join(notes, "\n"))
	}
	for _, l := range r.Leaked {
		fmt.Fprintf(w, "- leaked: %s\n", l)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "- harness error: %s\n", oneLine(e))
	}
	if len(r.Leaked)+len(r.Errors) > 0 {
		fmt.Fprintln(w)
	}
}

func rate(failed, sent int) string {
	if sent == 0 {
		return "—"
	}
	return fmt.Sprintf("%d / %d (%.3f%%)", failed, sent, 100*float64(failed)/float64(sent))
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:397] + "..."
	}
	return s
}

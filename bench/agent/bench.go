package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Bench runs the agent and measures it.
type Bench struct {
	Opt      Options
	Progress io.Writer

	agent   *agentProc
	desired string
	current map[string]Artifact // app → artifact in the desired state
	order   []string            // apps in the document's order
}

// Results is everything measured; it is written as JSON.
type Results struct {
	Command   string     `json:"command"`
	Machine   Machine    `json:"machine"`
	Ferry     BinaryInfo `json:"ferry"`
	Date      time.Time  `json:"date"`
	Options   Options    `json:"options"`
	Artifacts []Artifact `json:"artifacts"`
	Startup   Startup    `json:"startup"`
	Idle      Idle       `json:"idle"`
	Series    []Series   `json:"series"`
}

// Startup is from starting the agent to every app running and healthy.
type Startup struct {
	Apps      int           `json:"apps"`
	Instances int           `json:"instances"`
	ToRunning time.Duration `json:"to_running"`
}

// Run builds the apps, starts the agent, measures it idle and then the
// desired-state changes, and stops everything it started.
func (b *Bench) Run(ctx context.Context) (res *Results, err error) {
	o := b.Opt
	res = &Results{Options: o}
	b.progress("building %d apps with %s", o.Apps+1, o.Ferry)
	var idleArts []Artifact
	for k := 1; k <= o.Apps; k++ {
		a, err := buildApp(ctx, o.Ferry, o.Work, fmt.Sprintf("app%d", k), "v1", Plain, o.Scale)
		if err != nil {
			return nil, err
		}
		idleArts = append(idleArts, a)
	}
	plainV2, err := buildApp(ctx, o.Ferry, o.Work, "app1", "v2", Plain, o.Scale)
	if err != nil {
		return nil, err
	}
	var probed [2]Artifact
	for k, v := range []string{"v1", "v2"} {
		if probed[k], err = buildApp(ctx, o.Ferry, o.Work, "probed", v, Probed, o.Scale); err != nil {
			return nil, err
		}
	}
	res.Artifacts = append(append(slices.Clone(idleArts), plainV2), probed[:]...)

	root := filepath.Join(o.Work, "root")
	b.desired = filepath.Join(o.Work, "desired", "desired.yaml")
	if err := os.MkdirAll(filepath.Dir(b.desired), 0o755); err != nil {
		return nil, err
	}
	b.current = map[string]Artifact{}
	for _, a := range idleArts {
		b.set(a)
	}
	if err := writeAtomic(b.desired, b.doc()); err != nil {
		return nil, err
	}
	start := time.Now()
	b.agent, err = startAgent(o.Ferry, root, b.desired, filepath.Join(o.Work, "agent.log"), o.AgentEnv)
	if err != nil {
		return nil, err
	}
	defer b.agent.stop(func(doc string) error { return writeAtomic(b.desired, doc) })
	b.progress("agent pid %d; waiting for %d apps × %d instances", b.agent.pid(), o.Apps, o.Scale)
	if _, err := b.agent.until(ctx, "every app running", 2*time.Minute, 20*time.Millisecond, b.allRunning); err != nil {
		return nil, err
	}
	res.Startup = Startup{Apps: o.Apps, Instances: o.Apps * o.Scale, ToRunning: time.Since(start)}

	b.progress("measuring the idle agent for %v", o.Idle)
	if res.Idle, err = b.measureIdle(ctx); err != nil {
		return nil, err
	}
	// The idle agent's instances must not have changed while idle.
	if st, err := b.agent.status(ctx); err == nil && !b.allRunning(st) {
		return nil, fmt.Errorf("after the idle period not every app is running: %s", describe(st))
	}

	plainV1 := idleArts[0]
	s, err := b.series(ctx, "no health check (ready after MinUptime 1 s)", [2]Artifact{plainV1, plainV2})
	if err != nil {
		return nil, err
	}
	res.Series = append(res.Series, s)

	b.progress("adding the probed app")
	b.set(probed[0])
	if err := writeAtomic(b.desired, b.doc()); err != nil {
		return nil, err
	}
	if _, err := b.agent.until(ctx, "probed app running", time.Minute, 20*time.Millisecond, b.allRunning); err != nil {
		return nil, err
	}
	s, err = b.series(ctx, "exec health check every 10 ms", probed)
	if err != nil {
		return nil, err
	}
	res.Series = append(res.Series, s)
	return res, nil
}

func (b *Bench) progress(format string, args ...any) {
	fmt.Fprintf(b.Progress, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (b *Bench) set(a Artifact) {
	if _, ok := b.current[a.App]; !ok {
		b.order = append(b.order, a.App)
	}
	b.current[a.App] = a
}

func (b *Bench) doc() string {
	var arts []Artifact
	for _, name := range b.order {
		arts = append(arts, b.current[name])
	}
	return desiredDoc(arts)
}

func (b *Bench) allRunning(st *status) bool {
	for name, a := range b.current {
		if !st.running(name, a.SHA256, b.Opt.Scale) {
			return false
		}
	}
	return true
}

// Idle is the agent over the idle period, and `sleep` over the same period.
type Idle struct {
	Duration time.Duration `json:"duration"`
	// The agent process only (not its apps): VmRSS sampled every Sample,
	// VmHWM (peak since it started, so including the initial deploys).
	MaxRSSKiB    int64       `json:"max_rss_kib"`
	FinalRSSKiB  int64       `json:"final_rss_kib"`
	HWMKiB       int64       `json:"hwm_kib"`
	FinalAnonKiB int64       `json:"final_anon_kib"`
	FinalFileKiB int64       `json:"final_file_kib"`
	Samples      []RSSSample `json:"samples,omitempty"`
	// CPU: utime+stime from /proc/PID/stat (clock ticks, 10 ms on most
	// systems) over the period; OnCPU from the threads' schedstat (ns).
	CPU   time.Duration `json:"cpu"`
	OnCPU time.Duration `json:"on_cpu"`
	// Voluntary and involuntary context switches of all its threads over
	// the period: roughly how often it woke up.
	Voluntary   int64 `json:"voluntary_switches"`
	Involuntary int64 `json:"involuntary_switches"`
	Threads     int   `json:"threads"`
	FDs         int   `json:"fds"`
	// The baseline: `sleep <period>`, started with the period; its rusage.
	SleepCPU         time.Duration `json:"sleep_cpu"`
	SleepVoluntary   int64         `json:"sleep_voluntary_switches"`
	SleepInvoluntary int64         `json:"sleep_involuntary_switches"`
	// /proc/loadavg at the start and the end of the period.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// RSSSample is one reading of the agent's VmRSS.
type RSSSample struct {
	At     time.Duration `json:"at"`
	RSSKiB int64         `json:"rss_kib"`
}

func (b *Bench) measureIdle(ctx context.Context) (Idle, error) {
	o := b.Opt
	pid := b.agent.pid()
	id := Idle{Duration: o.Idle, LoadStart: loadavg()}
	sleep := exec.Command("sleep", strconv.FormatFloat(o.Idle.Seconds(), 'f', -1, 64))
	if err := sleep.Start(); err != nil {
		return id, err
	}
	start := time.Now()
	st0, err := readStat(pid)
	if err != nil {
		sleep.Process.Kill()
		sleep.Wait()
		return id, err
	}
	th0 := readThreads(pid)
	sample := func() {
		if m, err := readStatus(pid); err == nil {
			id.MaxRSSKiB = max(id.MaxRSSKiB, m.VmRSS)
			id.Samples = append(id.Samples, RSSSample{At: time.Since(start).Round(time.Millisecond), RSSKiB: m.VmRSS})
		}
	}
	sample()
	tick := time.NewTicker(o.Sample)
	end := time.NewTimer(o.Idle)
loop:
	for {
		select {
		case <-ctx.Done():
			tick.Stop()
			sleep.Process.Kill()
			sleep.Wait()
			return id, ctx.Err()
		case <-b.agent.exited:
			tick.Stop()
			sleep.Process.Kill()
			sleep.Wait()
			return id, fmt.Errorf("the agent exited while idle; its log:\n%s", tail(b.agent.log, 3000))
		case <-tick.C:
			sample()
		case <-end.C:
			break loop
		}
	}
	tick.Stop()
	sample()
	st1, err := readStat(pid)
	if err != nil {
		return id, err
	}
	th1 := readThreads(pid)
	m, err := readStatus(pid)
	if err != nil {
		return id, err
	}
	id.FinalRSSKiB, id.HWMKiB, id.FinalAnonKiB, id.FinalFileKiB, id.Threads = m.VmRSS, m.VmHWM, m.RssAnon, m.RssFile, m.Threads
	id.FDs = openFDs(pid)
	id.LoadEnd = loadavg()
	id.CPU = st1.cpu() - st0.cpu()
	id.OnCPU = th1.OnCPU - th0.OnCPU
	id.Voluntary, id.Involuntary = th1.Voluntary-th0.Voluntary, th1.Involuntary-th0.Involuntary
	if err := sleep.Wait(); err != nil {
		return id, fmt.Errorf("sleep: %w", err)
	}
	if ru, ok := sleep.ProcessState.SysUsage().(*syscall.Rusage); ok {
		id.SleepCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		id.SleepVoluntary, id.SleepInvoluntary = ru.Nvcsw, ru.Nivcsw
	}
	return id, nil
}

package logfile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as the app whose output is logged: run with
// LOGFILE_HELPER set, it writes numbered lines as fast as it can and exits.
func TestMain(m *testing.M) {
	mode := os.Getenv("LOGFILE_HELPER")
	if mode == "" {
		os.Exit(m.Run())
	}
	n, _ := strconv.Atoi(os.Getenv("LOGFILE_LINES"))
	switch mode {
	case "flood":
		writeNumbered(os.Stdout, "", n)
	case "both":
		var wg sync.WaitGroup
		wg.Go(func() { writeNumbered(os.Stdout, "out", n) })
		wg.Go(func() { writeNumbered(os.Stderr, "err", n) })
		wg.Wait()
	}
	os.Exit(0)
}

// writeNumbered writes n lines "<i>" or, with a prefix, "<prefix>-<i> "
// and padding of varying length, so that lines cross the pipe's atomic
// write size and a torn line shows.
func writeNumbered(f *os.File, prefix string, n int) {
	bw := bufio.NewWriterSize(f, 64<<10)
	for i := range n {
		if prefix == "" {
			fmt.Fprintf(bw, "%d\n", i)
			continue
		}
		fmt.Fprintf(bw, "%s-%d %s\n", prefix, i, strings.Repeat("x", padding(i)))
	}
	bw.Flush()
}

func padding(i int) int { return i * 37 % 9000 }

// runHelper runs the helper writing n lines through pipes into w's Drain,
// and returns once the process has exited and both Drains have returned.
// It fails the test if the process takes longer than limit to exit: the
// helper only exits once all its output has been read.
func runHelper(t *testing.T, w *Writer, mode string, n int, limit time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LOGFILE_HELPER="+mode, "LOGFILE_LINES="+strconv.Itoa(n))
	var drains sync.WaitGroup
	for i, stream := range []string{"out", "err"} {
		r, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			cmd.Stdout = pw
		} else {
			cmd.Stderr = pw
		}
		defer pw.Close()
		drains.Go(func() {
			defer r.Close()
			w.Drain(r, stream)
		})
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Only the child holds the write ends now, so the Drains see EOF
	// when it exits.
	cmd.Stdout.(io.Closer).Close()
	cmd.Stderr.(io.Closer).Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
	case <-time.After(limit):
		cmd.Process.Kill()
		<-exited
		drains.Wait()
		t.Fatalf("helper writing %d lines did not finish within %v: its output was not read", n, limit)
	}
	drains.Wait()
}

// logLine is one line of a log file, split into its fields.
type logLine struct {
	at     string
	stream string
	text   string
}

// readLog returns the lines of path and its rotated files, oldest first.
func readLog(t *testing.T, path string) []logLine {
	t.Helper()
	var lines []logLine
	for _, name := range Files(path) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if s != "" && !strings.HasSuffix(s, "\n") {
			t.Fatalf("%s does not end with a newline", filepath.Base(name))
		}
		for l := range strings.Lines(s) {
			f := strings.SplitN(strings.TrimSuffix(l, "\n"), " ", 3)
			if len(f) != 3 {
				t.Fatalf("%s: malformed line %q", filepath.Base(name), l)
			}
			lines = append(lines, logLine{f[0], f[1], f[2]})
		}
	}
	return lines
}

func fixedClock() time.Time {
	return time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600))
}

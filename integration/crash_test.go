package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/artifact"
)

// TestKillApplyAtRandomMoments SIGKILLs `ferry apply` (release strategy) at
// random moments, alternating two artifacts, and checks after each kill that
// current names a complete release: every file of one artifact, byte for byte.
func TestKillApplyAtRandomMoments(t *testing.T) {
	dir := t.TempDir()
	type art struct{ path, sum, marker string }
	var arts []art
	for _, v := range []string{"A", "B"} {
		var es []artifact.Entry
		for i := 0; i < 400; i++ {
			es = append(es, artifact.Entry{Name: fmt.Sprintf("d%d/f%d", i%20, i), Data: bytes.Repeat([]byte(v), 4096)})
		}
		es = append(es, artifact.Entry{Name: "marker", Data: []byte(v)})
		var buf bytes.Buffer
		if err := artifact.Pack(&buf, es, artifact.FormatZstd, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, v+".tar.zst")
		os.WriteFile(p, buf.Bytes(), 0o644)
		sum, _, _ := artifact.FileSHA256(p)
		arts = append(arts, art{p, sum, v})
	}
	dest := filepath.Join(dir, "dest")
	check := func(iter int) {
		cur, err := os.Readlink(filepath.Join(dest, "current"))
		if os.IsNotExist(err) {
			return // nothing was ever switched
		}
		if err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		root := filepath.Join(dest, cur)
		m, err := os.ReadFile(filepath.Join(root, "marker"))
		if err != nil {
			t.Fatalf("iteration %d: current %s has no marker: %v", iter, cur, err)
		}
		want := bytes.Repeat(m, 4096)
		for i := 0; i < 400; i++ {
			b, err := os.ReadFile(filepath.Join(root, fmt.Sprintf("d%d/f%d", i%20, i)))
			if err != nil || !bytes.Equal(b, want) {
				t.Fatalf("iteration %d: current %s is incomplete at file %d: %v", iter, cur, i, err)
			}
		}
	}
	iters := 40
	if testing.Short() {
		iters = 10
	}
	for i := 0; i < iters; i++ {
		a := arts[i%2]
		m := fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\nkeep_releases: 2\n", a.path, a.sum, dest)
		cmd := exec.Command(ferryBin, "apply", "-")
		cmd.Stdin = strings.NewReader(m)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.IntN(60_000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		check(i)
	}
	// After all that, a normal apply works and cleans up leftovers.
	a := arts[0]
	r := ferry(t, "", []byte(fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\nkeep_releases: 2\n", a.path, a.sum, dest)), "apply", "-")
	if r.code != 0 {
		t.Fatalf("apply after kills: exit %d\n%s", r.code, r.stderr)
	}
	check(iters)
	ents, _ := os.ReadDir(filepath.Join(dest, "releases"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Fatalf("staging dir %s left after a successful apply", e.Name())
		}
	}
}

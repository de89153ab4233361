package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestDiskFullDuringUnpack applies into a 4 MiB tmpfs: an artifact that
// does not fit fails with a clear error, current keeps naming the old
// release, nothing half-written stays, and the next apply still works.
func TestDiskFullDuringUnpack(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		testenv.SkipUnlessCIRoot(t, "cannot mount a tmpfs here: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", mnt).Run()

	mk := func(name string, size int) (string, string) {
		data := make([]byte, size)
		x := uint32(len(name)*7919 + size)
		for i := range data[:min(size, 1<<20)] { // the rest stays zero: compresses, so the download fits and unpack does not
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			data[i] = byte(x)
		}
		var buf bytes.Buffer
		es := []artifact.Entry{{Name: "marker", Data: []byte(name)}, {Name: "data", Data: data}}
		if err := artifact.Pack(&buf, es, artifact.FormatZstd, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".tar.zst") // outside the tmpfs
		os.WriteFile(p, buf.Bytes(), 0o644)
		sum, _, _ := artifact.FileSHA256(p)
		return p, sum
	}
	dest := filepath.Join(mnt, "app")
	apply := func(p, sum string) result {
		return ferry(t, "", []byte(fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\nkeep_releases: 2\n", p, sum, dest)), "apply", "-")
	}
	for _, name := range []string{"a", "b"} {
		p, sum := mk(name, 512<<10)
		if r := apply(p, sum); r.code != 0 {
			t.Fatalf("small apply %s: exit %d\n%s", name, r.code, r.stderr)
		}
	}
	big, bigSum := mk("big", 6<<20)
	r := apply(big, bigSum)
	if r.code != 1 || !strings.Contains(r.stderr, "no space left on device") || !strings.Contains(r.stderr, "unpack") {
		t.Fatalf("apply that cannot fit: exit %d, stderr %q", r.code, r.stderr)
	}
	if m, err := os.ReadFile(filepath.Join(dest, "current", "marker")); err != nil || string(m) != "b" {
		t.Fatalf("current/marker = %q, %v; want the release from before", m, err)
	}
	ents, _ := os.ReadDir(filepath.Join(dest, "releases"))
	ferryEnts, _ := os.ReadDir(filepath.Join(dest, ".ferry"))
	for _, e := range append(ents, ferryEnts...) {
		if strings.HasPrefix(e.Name(), ".tmp-") || strings.HasPrefix(e.Name(), "download-") {
			t.Fatalf("left behind after the failure: %s", e.Name())
		}
	}
	// Retention and installs still work afterwards.
	p, sum := mk("c", 512<<10)
	if r := apply(p, sum); r.code != 0 {
		t.Fatalf("apply after disk full: exit %d\n%s", r.code, r.stderr)
	}
	ents, _ = os.ReadDir(filepath.Join(dest, "releases"))
	if len(ents) != 2 {
		t.Fatalf("keep_releases 2 left %d releases", len(ents))
	}
}

package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestAgentDiskFull runs an agent whose root is a 40 MiB tmpfs and deploys
// a release that does not fit once unpacked: the deployment fails and says
// why, the old release keeps serving, nothing half-written is left in the
// releases or the cache, and the next release that fits installs.
func TestAgentDiskFull(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", root).CombinedOutput(); err != nil {
		testenv.SkipUnlessCIRoot(t, "cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", root).Run() })
	must := fleetCLI(t)
	app := t.TempDir()
	buildHelloBin(t, goBin, app)
	y := strings.Replace(fleetYAML("", ", timeout: 5s"), "include: [bin/]", "include: [bin/, data.bin]", 1) + "keep_releases: 2\n"
	os.WriteFile(filepath.Join(app, "ferry.yaml"), []byte(y), 0o644)
	arts := map[string]string{}
	versions := []string{"1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"}
	for v, size := range map[string]int{"1.0.0": 1 << 20, "2.0.0": 60 << 20, "3.0.0": 1 << 20, "4.0.0": 1 << 20, "5.0.0": 1 << 20} {
		// 256 KiB of noise, then zeros: the artifact downloads small and
		// unpacks to size.
		data := make([]byte, size)
		rand.Read(data[:256<<10])
		os.WriteFile(filepath.Join(app, "data.bin"), data, 0o644)
		arts[v], _ = buildDir(t, app, v)
	}
	fn := newFleetNet(t, 1)
	srv := startFleetServer(t, fn.serverIP)
	joinAgents(t, must, fn, srv, root)
	for _, v := range versions {
		must(0, "publish", arts[v])
	}
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "30s")
	r, _ := fleetRun(context.Background(), nil, "deploy", "hello", "2.0.0", "--to", "prod", "--health-timeout", "30s")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "no space left on device") {
		t.Fatalf("deploy of a release that does not fit: exit %d, want a failure that says no space left on device\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var st fleetStatus
	json.Unmarshal([]byte(must(0, "status", "-o", "json").stdout), &st)
	if !st.host("web-1").runs("hello", "v1") {
		t.Fatalf("after the failed deploy: %s, want v1 still running healthy", st.host("web-1"))
	}
	appDir := filepath.Join(root, "apps", "hello")
	rels, _ := os.ReadDir(filepath.Join(appDir, "releases"))
	if len(rels) != 1 || !strings.HasPrefix(rels[0].Name(), "v1-") {
		var names []string
		for _, e := range rels {
			names = append(names, e.Name())
		}
		t.Fatalf("releases after the failed unpack: %v, want only v1's", names)
	}
	filepath.WalkDir(filepath.Join(root, "cache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasPrefix(d.Name(), ".") || strings.Contains(d.Name(), "tmp") || strings.Contains(d.Name(), "download")) {
			t.Errorf("left in the cache: %s", p)
		}
		return nil
	})
	must(0, "deploy", "hello", "3.0.0", "--to", "prod", "--health-timeout", "30s")
	json.Unmarshal([]byte(must(0, "status", "-o", "json").stdout), &st)
	if !st.host("web-1").runs("hello", "v3") {
		t.Fatalf("after a release that fits: %s", st.host("web-1"))
	}
	// Retention still works: after two more releases only keep_releases
	// (2) are left, the current one (5.0.0) and the one before (4.0.0).
	must(0, "deploy", "hello", "4.0.0", "--to", "prod", "--health-timeout", "30s")
	prev, _ := os.Readlink(filepath.Join(appDir, "current"))
	must(0, "deploy", "hello", "5.0.0", "--to", "prod", "--health-timeout", "30s")
	cur, _ := os.Readlink(filepath.Join(appDir, "current"))
	want := []string{filepath.Base(prev), filepath.Base(cur)}
	slices.Sort(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var names []string
		rels, _ := os.ReadDir(filepath.Join(appDir, "releases"))
		for _, e := range rels {
			names = append(names, e.Name())
		}
		if slices.Equal(names, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("releases after 4.0.0 and 5.0.0 with keep_releases 2: %v, want %v", names, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

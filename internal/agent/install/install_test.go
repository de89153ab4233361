package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

func archive(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var es []artifact.Entry
	for n, b := range files {
		es = append(es, artifact.Entry{Name: n, Data: []byte(b)})
	}
	var buf bytes.Buffer
	if err := artifact.Pack(&buf, es, artifact.FormatZstd, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func installN(t *testing.T, d Dir, n int) []string {
	t.Helper()
	var ids []string
	for i := 1; i <= n; i++ {
		sha := fmt.Sprintf("%064d", i)
		id := d.NextID(sha)
		if err := d.Install(context.Background(), id, sha, bytes.NewReader(archive(t, map[string]string{"v": id, "log/x": "from artifact"})), Options{Limits: artifact.DefaultLimits, Shared: []string{"log/"}}); err != nil {
			t.Fatal(err)
		}
		if err := d.Activate(id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestInstallActivateAndShared(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	ids := installN(t, d, 2)
	if ids[0] != "v1-00000000" || ids[1] != "v2-00000000" {
		t.Fatalf("ids = %v", ids)
	}
	cur, _ := d.Current()
	prev, _ := d.Previous()
	if cur != ids[1] || prev != ids[0] {
		t.Fatalf("current %s previous %s", cur, prev)
	}
	b, err := os.ReadFile(filepath.Join(d.Path, CurrentLink, "v"))
	if err != nil || string(b) != ids[1] {
		t.Fatalf("current/v = %q %v", b, err)
	}
	// shared/log replaced the artifact's log/ and survives releases.
	if err := os.WriteFile(filepath.Join(d.Path, CurrentLink, "log", "app.log"), []byte("kept"), 0o644); err != nil {
		t.Fatalf("shared dir not writable through the release: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(d.Path, SharedDir, "log", "app.log")); string(b) != "kept" {
		t.Fatal("write through release/log did not land in shared/log")
	}
	// Releases are read-only after unpack (for a non-root user; root ignores modes).
	fi, _ := os.Stat(filepath.Join(d.ReleasePath(ids[1]), "v"))
	if fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("release file mode %v is writable", fi.Mode())
	}
	if d.Find(fmt.Sprintf("%064d", 1)) != ids[0] {
		t.Fatal("Find does not find the first release by sha256")
	}
	if err := d.Install(context.Background(), ids[0], "x", bytes.NewReader(nil), Options{}); err == nil {
		t.Fatal("installing over an existing release id succeeded")
	}
	if err := d.Activate("v9-nothere"); ferry.ErrorCode(err) != ferry.ENOTFOUND {
		t.Fatalf("activating a missing release: %v", err)
	}
}

func TestFailedInstallLeavesNothing(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	installN(t, d, 1)
	before, _ := d.Current()
	bad := append(archive(t, map[string]string{"a": "1"})[:20:20], 0, 0, 0)
	if err := d.Install(context.Background(), "v2-bad", "bad", bytes.NewReader(bad), Options{Limits: artifact.DefaultLimits}); err == nil {
		t.Fatal("truncated archive installed")
	}
	ents, _ := os.ReadDir(filepath.Join(d.Path, ReleasesDir))
	if len(ents) != 1 {
		t.Fatalf("releases/ holds %d entries after a failed install, want 1", len(ents))
	}
	if cur, _ := d.Current(); cur != before {
		t.Fatalf("current moved to %s", cur)
	}
}

func TestLockIsExclusive(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	unlock, err := d.Lock()
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file, so a second open in this process conflicts too.
	if _, err := d.Lock(); ferry.ErrorCode(err) != ferry.ELOCKED || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second lock: %v; want locked naming pid %d", err, os.Getpid())
	}
	unlock()
	unlock2, err := d.Lock()
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestPruneKeepsCurrentAndPrevious(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	ids := installN(t, d, 6)
	// Roll back to the oldest: current is now the oldest, previous the newest.
	if err := d.Activate(ids[0]); err != nil {
		t.Fatal(err)
	}
	res, err := d.Prune(2)
	if err != nil {
		t.Fatal(err)
	}
	left, _ := d.Releases()
	var got []string
	for _, r := range left {
		got = append(got, r.ID)
	}
	if strings.Join(got, ",") != ids[0]+","+ids[5] {
		t.Fatalf("left %v after prune(2) with current %s previous %s; removed %v", got, ids[0], ids[5], res.Removed)
	}
	if len(res.Removed) != 4 || res.Err() != nil {
		t.Fatalf("removed %v, err %v", res.Removed, res.Err())
	}
}

func TestPruneReportsWhatItCannotRemove(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	ids := installN(t, d, 4)
	stuck := filepath.Join(d.ReleasePath(ids[0]), "v")
	if err := exec.Command("chattr", "+i", stuck).Run(); err != nil {
		testenv.SkipUnlessCI(t, "chattr +i unavailable here: %v", err)
	}
	defer exec.Command("chattr", "-i", stuck).Run()
	res, err := d.Prune(2)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Failed[ids[0]]; !ok || res.Err() == nil {
		t.Fatalf("failure to remove %s not reported: %+v", ids[0], res)
	}
	if len(res.Removed) != 1 || res.Removed[0] != ids[1] {
		t.Fatalf("prune stopped at the failure instead of going on: removed %v", res.Removed)
	}
	if !errors.Is(res.Err(), res.Failed[ids[0]]) {
		t.Fatal("Err does not wrap the failure")
	}
}

// TestLockCleansInterruptedStaging: an install killed mid-unpack leaves a
// staging directory; the next holder of the lock removes it even if it has
// nothing to install.
func TestLockCleansInterruptedStaging(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	stage := filepath.Join(d.Path, ReleasesDir, stagePrefix+"v2-abc-123")
	if err := os.MkdirAll(filepath.Join(stage, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := d.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := os.Stat(stage); !os.IsNotExist(err) {
		t.Fatalf("staging dir still there after Lock: %v", err)
	}
}

// TestWritableUntilSealed: a release installed for post hooks is
// writable by its owner and shares no file with the current release, so a
// hook that writes a file in place cannot change the running one; Seal
// makes it read-only as any release.
func TestWritableUntilSealed(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	ids := installN(t, d, 1)
	cur := ids[0]
	files := map[string]string{"v": cur, "bin/app": "bytes"} // v as in the current release
	// The current release holds the same files, so a read-only install
	// would hard-link them.
	sha := fmt.Sprintf("%064d", 9)
	id := d.NextID(sha)
	if err := d.Install(context.Background(), id, sha, bytes.NewReader(archive(t, files)), Options{Limits: artifact.DefaultLimits, Writable: true}); err != nil {
		t.Fatal(err)
	}
	rel := d.ReleasePath(id)
	for _, f := range []string{"v", "bin/app"} {
		if err := os.WriteFile(filepath.Join(rel, f), []byte("changed by a hook"), 0o644); err != nil {
			t.Fatalf("a post hook cannot write into the release: %v", err)
		}
	}
	if err := os.Mkdir(filepath.Join(rel, "node_modules"), 0o755); err != nil {
		t.Fatalf("a post hook cannot create a directory in the release: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(d.ReleasePath(cur), "v")); string(b) != cur {
		t.Errorf("the current release's file changed: %q", b)
	}
	if err := d.Seal(id); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{rel, filepath.Join(rel, "bin"), filepath.Join(rel, "bin", "app"), filepath.Join(rel, "node_modules")} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s after Seal: %v %v, want no write bits", p, fi.Mode(), err)
		}
	}
}

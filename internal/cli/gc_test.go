package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

func TestPrintGC(t *testing.T) {
	res := api.GCResult{
		Removed: []api.Artifact{
			{App: "hello", Version: "v1.2.0-3-gab12cd3", SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Size: 52 << 20, Uploaded: t0.Add(-72 * time.Hour)},
			{App: "api", Version: "v0.9.0", SHA256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", Size: 3 << 20, Uploaded: t0.Add(-26 * time.Hour)},
		},
		Kept: 7, Freed: 55 << 20,
	}
	var b bytes.Buffer
	printGC(&b, res)
	res.DryRun = true
	printGC(&b, res)
	printGC(&b, api.GCResult{Kept: 3})
	printGC(&b, api.GCResult{Kept: 1, Failed: map[string]string{"2c26b46b68ff": "store: access denied"}})
	checkGolden(t, "gc.txt", b.String())
}

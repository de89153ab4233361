package manifest

import (
	"testing"

	"github.com/ferrydeploy/ferry"
)

// FuzzParse: no manifest, however malformed, panics the parser or fails
// with anything but an input error the user can fix.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"src: https://example.com/a.tar.gz\nchecksum: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\ndest: /srv/app\n",
		"src: s3://b/k.tar.zst?region=x\ndest: /srv/app\nexcludes: [\"*.log\", tmp/]\nsync_strategy: release\nkeep_releases: 3\ncommands:\n  pre: [\"echo pre\"]\n  post: [\"echo {{ env \\\"X\\\" \\\"d\\\" }}\"]\n",
		"dest: {{ must_env \"NOPE\" }}\n",
		"dest_mode: 0755\nsrc: /a\ndest: /b\n",
		"{{", "src: [", "- a\n- b\n", "", "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if ferry.ErrorCode(err) != ferry.EINVALID {
				t.Fatalf("Parse: %v (%s), want an input error", err, ferry.ErrorCode(err))
			}
			return
		}
		if m.Src != "" && m.Dest == "" {
			t.Fatalf("Parse accepted src %q without dest", m.Src)
		}
	})
}

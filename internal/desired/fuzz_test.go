package desired

import (
	"testing"

	"github.com/ferrydeploy/ferry"
)

// FuzzParse: a desired-state document, however malformed, is parsed or
// refused with an input error; an accepted one names an artifact and a
// sha256 for every app.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"apps:\n  hello:\n    artifact: file:///srv/dist/hello-v3.tar.zst\n    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n    release: v3\n    env: {LOG_LEVEL: info}\n    scale: {web: 2}\n",
		"{\"apps\":{}}", "apps: [1]", "apps:\n  x: {artifact: a}\n", "", "\t",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse(b)
		if err != nil {
			if ferry.ErrorCode(err) != ferry.EINVALID {
				t.Fatalf("Parse: %v (%s), want an input error", err, ferry.ErrorCode(err))
			}
			return
		}
		for name, a := range d.Apps {
			if a.Artifact == "" || a.SHA256 == "" {
				t.Fatalf("accepted app %s without artifact or sha256: %q", name, b)
			}
		}
	})
}

package safeyaml

import (
	"testing"

	"github.com/goccy/go-yaml"
)

// TestPanicIsAnError is the input fuzzing found (manifest.FuzzParse):
// go-yaml panics on it; Unmarshal says it cannot read it.
func TestPanicIsAnError(t *testing.T) {
	var v struct {
		Excludes []string `yaml:"excludes"`
	}
	b := []byte("excludes: !000\n  000: 0\n")
	if err := Unmarshal(b, &v, yaml.Strict()); err == nil {
		t.Fatal("no error")
	}
}

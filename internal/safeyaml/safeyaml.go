// Package safeyaml is goccy/go-yaml's decoding with the parser's panics on
// hostile input turned into errors: ferry parses manifests fetched from
// URLs and desired states from servers, and fuzzing found inputs that
// panic go-yaml v1.19.2 (a tag on a mapping where a sequence belongs).
package safeyaml

import (
	"fmt"

	"github.com/goccy/go-yaml"
)

// Unmarshal is yaml.UnmarshalWithOptions that returns an error where the
// parser would panic.
func Unmarshal(b []byte, v any, opts ...yaml.DecodeOption) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML parser could not read this document (%v)", r)
		}
	}()
	return yaml.UnmarshalWithOptions(b, v, opts...)
}

package cli

import (
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/store/blob"
)

// newRegistry is every source scheme the CLI's downloads know: file,
// http(s), s3 and gs (stretcher's sources).
func newRegistry() fetch.Registry {
	reg := fetch.NewRegistry()
	buckets := &blob.Source{}
	reg["s3"], reg["gs"] = buckets, buckets
	return reg
}

package cli

import (
	"github.com/ferrydeploy/ferry/fetch"
	"github.com/ferrydeploy/ferry/store/blob"
)

// newRegistry is every source scheme the CLI's downloads know: file,
// http(s) and s3 (stretcher's sources).
func newRegistry() fetch.Registry {
	reg := fetch.NewRegistry()
	reg["s3"] = &blob.Source{}
	return reg
}

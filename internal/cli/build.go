package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/internal/artifact"
)

func newBuild(env Env) *cobra.Command {
	var (
		opt    artifact.BuildOptions
		output string
	)
	cmd := &cobra.Command{
		Use:   "build [DIR]",
		Short: "Build and pack an app into dist/<app>-<version>-<os>-<arch>.tar.zst",
		Long: `Build compiles the app in DIR (default .) as its ferry.yaml says and packs it
into a reproducible archive: the same source gives the same sha256. It
writes <artifact>.sha256 beside the archive and prints path, size and sha256.

A Go app (build.go, or a main package in DIR) is built with CGO_ENABLED=0
and -trimpath for --os/--arch. Any other app runs build.command and packs
include:. The version is git describe's, with -dirty when DIR has
uncommitted changes; entry mtimes are SOURCE_DATE_EPOCH or the commit time.`,
		Example: `  ferry build examples/hello
  ferry build --arch arm64 --version v1.2.3 .
  ferry build --format tar.gz -o json ./myapp`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			dir := "."
			if len(a) == 1 {
				dir = a[0]
			}
			opt.Output = env.Stderr
			res, err := artifact.Build(cmd.Context(), dir, opt)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(env.Stdout, map[string]any{"path": res.Path, "size": res.Size, "sha256": res.SHA256, "meta": res.Meta})
			}
			fmt.Fprintf(env.Stdout, "%s\n  size    %s (%d bytes)\n  sha256  %s\n", res.Path, humanBytes(res.Size), res.Size, res.SHA256)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.OS, "os", "linux", "target operating system (GOOS)")
	f.StringVar(&opt.Arch, "arch", "amd64", "target architecture (GOARCH)")
	f.StringVar(&opt.Version, "version", "", "artifact version (default: git describe, -dirty when changed)")
	f.StringVar(&opt.Format, "format", artifact.FormatZstd, "archive format: tar.zst or tar.gz")
	f.StringVar(&opt.OutDir, "dist", "", "output directory (default DIR/dist)")
	addOutputFlag(cmd, &output)
	return cmd
}

package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/artifact"
	"github.com/ferrydeploy/ferry/fetch"
	"github.com/ferrydeploy/ferry/manifest"
)

func newApply(env Env) *cobra.Command {
	var (
		opt          manifest.Options
		maxBandwidth string
		maxUnpacked  string
		output       string
	)
	cmd := &cobra.Command{
		Use:   "apply MANIFEST|URL|-",
		Short: "Deploy an artifact on this host from a stretcher-compatible manifest",
		Long: `Apply fetches the manifest's src, verifies its checksum, unpacks it safely and
puts it at dest with the manifest's sync_strategy:

  rsync    make dest match the archive, keeping excluded paths (default)
  mv       swap the unpacked tree in for dest atomically
  release  dest/releases/<id>, dest/current flipped atomically, keep_releases,
           shared: directories linked in

Hooks (commands.pre/post/success/failure) run with sh -c; success and failure
get the whole apply log on stdin. Any failure runs the failure hooks and
leaves dest as it was. With "-", stdin holds a manifest, its URL (a Serf user
event payload) or a Consul event array (consul watch -type event), so ferry
apply - works as a Consul watch or Serf event handler.

The manifest may use {{ env "NAME" "default" }} and {{ must_env "NAME" }}.`,
		Example: `  ferry apply deploy.yml
  ferry apply https://example.com/hello/deploy.yml --retry 3 --retry-wait 5s
  ferry apply - < deploy.yml
  serf agent -event-handler 'user:deploy=ferry apply -'`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if maxBandwidth != "" {
				bw, err := parseBytes(maxBandwidth)
				if err != nil {
					return usageError{fmt.Errorf("--max-bandwidth: %w", err)}
				}
				opt.MaxBandwidth = bw
			}
			opt.Limits = artifact.DefaultLimits
			if maxUnpacked != "" {
				n, err := parseBytes(maxUnpacked)
				if err != nil {
					return usageError{fmt.Errorf("--max-unpacked-size: %w", err)}
				}
				opt.Limits.MaxBytes = n
			}
			opt.Registry = fetch.NewRegistry()
			opt.Output = env.Stderr
			wd, _ := os.Getwd()
			opt.HookDir = wd
			b, from, err := manifest.Read(cmd.Context(), a[0], cmd.InOrStdin(), opt.Registry)
			if err != nil {
				return err
			}
			m, err := manifest.Parse(b)
			if err != nil {
				return fmt.Errorf("%s: %w", from, err)
			}
			res, err := manifest.Apply(cmd.Context(), m, opt)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(env.Stdout, res)
			}
			switch {
			case res.Skipped:
				fmt.Fprintf(env.Stdout, "%s: release %s is already current\n", m.Dest, res.Release)
			case res.Release != "":
				fmt.Fprintf(env.Stdout, "%s: release %s is current\n", m.Dest, res.Release)
			case m.Src != "":
				fmt.Fprintf(env.Stdout, "%s: deployed (%s)\n", m.Dest, m.SyncStrategy)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opt.Retries, "retry", 0, "retry a failed download this many times")
	f.DurationVar(&opt.RetryWait, "retry-wait", 3*time.Second, "wait between download retries")
	f.DurationVar(&opt.Timeout, "timeout", 0, "give up fetching src after this long (0: no limit)")
	f.StringVar(&maxBandwidth, "max-bandwidth", "", "limit the download rate, e.g. 10MB (per second)")
	f.DurationVar(&opt.RandomDelay, "random-delay", 0, "first sleep a random time up to this, to spread a fleet's downloads")
	f.IntVar(&opt.Limits.MaxFiles, "max-files", artifact.DefaultLimits.MaxFiles, "reject archives with more entries")
	f.StringVar(&maxUnpacked, "max-unpacked-size", "", "reject archives that unpack to more than this (default 8GiB)")
	addOutputFlag(cmd, &output)
	return cmd
}

package cli

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/manifest"
	"github.com/ferrydeploy/ferry/internal/signature"
)

func newApply(env Env) *cobra.Command {
	var (
		opt          manifest.Options
		maxBandwidth string
		maxUnpacked  string
		output       string
		trustedKeys  string
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

The manifest may use {{ env "NAME" "default" }} and {{ must_env "NAME" }}.

With --trusted-keys FILE, apply runs only a manifest signed by one of the
keys in FILE: the signature file (ferry sign) is MANIFEST.sig next to it, or
URL.sig for a manifest read from a URL.`,
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
			opt.Registry = newRegistry()
			opt.Output = env.Stderr
			wd, _ := os.Getwd()
			opt.HookDir = wd
			var trusted []ed25519.PublicKey
			if trustedKeys != "" {
				var err error
				if trusted, err = signature.LoadTrusted(trustedKeys); err != nil {
					return usageError{fmt.Errorf("--trusted-keys: %w", err)}
				}
			}
			b, from, err := manifest.Read(cmd.Context(), a[0], cmd.InOrStdin(), opt.Registry)
			if err != nil {
				return err
			}
			if trusted != nil {
				if err := checkManifestSignature(cmd.Context(), opt.Registry, trusted, b, from); err != nil {
					return err
				}
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
	f.StringVar(&trustedKeys, "trusted-keys", "", "apply only a manifest signed by a key in this file (ferry keygen .pub lines)")
	addOutputFlag(cmd, &output)
	return cmd
}

// checkManifestSignature verifies the manifest read from "from" against
// its .sig, which sits next to it.
func checkManifestSignature(ctx context.Context, reg fetch.Registry, trusted []ed25519.PublicKey, b []byte, from string) error {
	if from == "stdin" {
		return usageError{fmt.Errorf("--trusted-keys: a manifest on stdin has no signature file; give its path or URL")}
	}
	sigBytes, _, err := manifest.Read(ctx, from+".sig", nil, reg)
	if err != nil {
		return ferry.WrapError(ferry.EINVALID, err, "manifest %s refused: no signature file %s.sig", from, from)
	}
	sigs, err := signature.ParseSigFile(sigBytes)
	if err != nil {
		return ferry.WrapError(ferry.EINVALID, err, "%s.sig", from)
	}
	if err := signature.Verify(trusted, signature.FileMessage(b), sigs); err != nil {
		return ferry.Errorf(ferry.EINVALID, "manifest %s refused: %v; nothing was changed", from, err)
	}
	return nil
}

package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
)

func newGC(env Env) *cobra.Command {
	var (
		req    api.GCRequest
		output string
	)
	cmd := &cobra.Command{
		Use:   "gc [--keep N] [--min-age D] [--dry-run]",
		Short: "Remove published artifacts no release uses (admin)",
		Long: `Gc removes from the artifact store the artifacts no release references: ones
published and never deployed. It keeps the --keep newest per app and any
published within --min-age (a publish whose deploy is still to come), and
never one a release names, so every rollback still finds its artifact. It
prints what it removed and how much space that freed; --dry-run only says.`,
		Example: `  ferry gc --dry-run
  ferry gc --keep 3
  ferry gc --keep 0 --min-age 0 -o json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if req.Keep < 0 || req.MinAge < 0 {
				return usageError{fmt.Errorf("--keep and --min-age cannot be negative")}
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			res, err := c.GC(cmd.Context(), req)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(env.Stdout, res)
			}
			printGC(env.Stdout, res)
			if len(res.Failed) > 0 {
				return fmt.Errorf("gc: %d artifacts could not be removed", len(res.Failed))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&req.Keep, "keep", 5, "unreleased artifacts kept per app, newest first")
	f.DurationVar(&req.MinAge, "min-age", time.Hour, "keep artifacts published less than this long ago")
	f.BoolVar(&req.DryRun, "dry-run", false, "say what would be removed, remove nothing")
	addOutputFlag(cmd, &output)
	return cmd
}

func printGC(w io.Writer, res api.GCResult) {
	verb := "Removed"
	if res.DryRun {
		verb = "Would remove"
	}
	if len(res.Removed) > 0 {
		tw := newTable(w)
		fmt.Fprintln(tw, "APP\tVERSION\tSHA256\tSIZE\tPUBLISHED")
		for _, a := range res.Removed {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.App, a.Version, a.SHA256[:12], humanBytes(a.Size), a.Uploaded.Format(time.DateTime))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "%s %d artifacts (%s); kept %d\n", verb, len(res.Removed), humanBytes(res.Freed), res.Kept)
	for sum, why := range res.Failed {
		fmt.Fprintf(w, "could not remove %s: %s\n", sum, why)
	}
}

package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/devrun"
)

func newPublish(env Env) *cobra.Command {
	var output, signKey string
	cmd := &cobra.Command{
		Use:   "publish [ARTIFACT]",
		Short: "Upload an artifact to the server",
		Long: `Publish uploads an artifact built by ferry build (default: the newest
dist/*.tar.zst in the current directory) and registers it with the server,
which reads its app and version from inside it. When the server already has
an artifact with the same sha256 nothing is sent. A progress bar shows on
stderr when it is a terminal. --sign KEY also makes the release of this
artifact with the app's newest config and signs it, for agents that run
only signed releases (deploy it with --release vN).`,
		Example: `  ferry publish
  ferry publish dist/hello-v1.4.0-linux-amd64.tar.zst
  ferry publish -o json dist/hello-v1.4.0-linux-amd64.tar.zst
  ferry publish dist/hello-v1.4.0-linux-amd64.tar.zst --sign ~/.ferry/release.key`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			path := ""
			if len(a) == 1 {
				path = a[0]
			} else {
				p, err := newestArtifact("dist")
				if err != nil {
					return err
				}
				path = p
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			bar := newProgressBar(env.Stderr, filepath.Base(path), devrun.IsTerminal(env.Stderr))
			art, err := c.UploadArtifact(cmd.Context(), path, bar.update)
			bar.finish(err == nil && !art.Existed)
			if err != nil {
				return err
			}
			if signKey != "" {
				if _, err := signedRelease(cmd.Context(), env, c, signKey, api.DeployRequest{App: art.App, SHA256: art.SHA256}); err != nil {
					return err
				}
			}
			if output == "json" {
				return writeJSON(env.Stdout, art)
			}
			name := strings.TrimSpace(art.App + " " + art.Version)
			if name == "" {
				name = filepath.Base(path)
			}
			if art.Existed {
				fmt.Fprintf(env.Stdout, "%s already on the server\n  sha256  %s\n", name, art.SHA256)
				return nil
			}
			fmt.Fprintf(env.Stdout, "%s published\n  size    %s\n  sha256  %s\n", name, humanBytes(art.Size), art.SHA256)
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVar(&signKey, "sign", "", "make this artifact's release and sign it with this key (ferry keygen)")
	return cmd
}

// newestArtifact is the most recently written dist/*.tar.zst (or .tar.gz).
func newestArtifact(dir string) (string, error) {
	var paths []string
	for _, pat := range []string{"*.tar.zst", "*.tar.gz"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		paths = append(paths, m...)
	}
	best, bestTime := "", time.Time{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if best == "" || fi.ModTime().After(bestTime) {
			best, bestTime = p, fi.ModTime()
		}
	}
	if best == "" {
		return "", ferry.Errorf(ferry.EINVALID, "no artifact in %s/: run ferry build first, or name the artifact", dir)
	}
	return best, nil
}

// progressBar draws an upload's progress on a terminal, at most ten times
// a second; elsewhere it writes one line when the upload is done.
type progressBar struct {
	w       io.Writer
	name    string
	tty     bool
	start   time.Time
	last    time.Time
	done    int64
	total   int64
	drawn   bool
	nowFunc func() time.Time
}

func newProgressBar(w io.Writer, name string, tty bool) *progressBar {
	return &progressBar{w: w, name: name, tty: tty, nowFunc: time.Now}
}

func (p *progressBar) update(done, total int64) {
	now := p.nowFunc()
	if p.start.IsZero() {
		p.start = now
	}
	p.done, p.total = done, total
	if p.tty && (now.Sub(p.last) >= 100*time.Millisecond || done == total) {
		p.last = now
		fmt.Fprintf(p.w, "\r%s\x1b[K", p.line(now))
		p.drawn = true
	}
}

// finish ends the bar's line; uploaded says whether bytes were sent.
func (p *progressBar) finish(uploaded bool) {
	switch {
	case p.drawn:
		fmt.Fprintln(p.w)
	case uploaded && !p.start.IsZero():
		fmt.Fprintln(p.w, p.line(p.nowFunc()))
	}
}

// line is e.g. "hello-v3.tar.zst [#######.......]  45%  9.0 MiB / 20.0 MiB  3.1 MiB/s".
func (p *progressBar) line(now time.Time) string {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.done) / float64(p.total)
	}
	n := int(frac * width)
	rate := ""
	if el := now.Sub(p.start).Seconds(); el > 0 {
		rate = "  " + humanBytes(int64(float64(p.done)/el)) + "/s"
	}
	return fmt.Sprintf("%s [%s%s] %3.0f%%  %s / %s%s", p.name, strings.Repeat("#", n), strings.Repeat(".", width-n),
		frac*100, humanBytes(p.done), humanBytes(p.total), rate)
}

// Command ferry ships applications to servers. See the README.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferrydeploy/ferry/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	code := cli.Main(ctx)
	stop()
	os.Exit(code)
}

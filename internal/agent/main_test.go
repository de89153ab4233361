package agent

import (
	"fmt"
	"os"
	"testing"

	"github.com/ferrydeploy/ferry/internal/agent/runas"
)

// TestMain lets the test binary stand in for ferry's own shims: an agent
// under test starts processes with user: or limits: through
// `<test binary> __exec …`, as the real agent does through ferry.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == runas.ShimCommand {
		err := runas.Exec(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(127)
	}
	os.Exit(m.Run())
}

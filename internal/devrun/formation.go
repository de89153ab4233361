package devrun

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ferrydeploy/ferry"
)

// All is the Formation key that sets the count of every process not named.
const All = "all"

// Formation is how many instances of each process to run, foreman's -m:
// "web=2,worker=1" runs two webs, one worker and nothing else; "all=1,web=2"
// runs one of everything but two webs.
type Formation map[string]int

// DefaultFormation runs one instance of every process, as foreman does
// without -m. A ferry.yaml `scale:` is for deployed hosts, not for a laptop.
func DefaultFormation() Formation { return Formation{All: 1} }

// ParseFormation parses "name=N[,name=N…]"; an empty string is the default.
func ParseFormation(s string) (Formation, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultFormation(), nil
	}
	f := Formation{}
	for _, pair := range strings.Split(s, ",") {
		name, count, ok := strings.Cut(strings.TrimSpace(pair), "=")
		name, count = strings.TrimSpace(name), strings.TrimSpace(count)
		n, err := strconv.Atoi(count)
		if !ok || name == "" || err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not name=COUNT; write e.g. web=2,worker=1 or all=1", pair)
		}
		f[name] = n
	}
	return f, nil
}

// Count returns how many instances of the named process to run.
func (f Formation) Count(name string) int {
	if n, ok := f[name]; ok {
		return n
	}
	return f[All]
}

// Apply returns a copy of procs with each Scale set by the formation,
// keeping every process (at scale 0 when not run) so that PORT numbering
// follows the file's order. A name that procs does not have is an error.
func (f Formation) Apply(procs []ferry.Process) ([]ferry.Process, error) {
	for name := range f {
		if name != All && !hasProcess(procs, name) {
			return nil, fmt.Errorf("no process %q; the processes are %s", name, processNames(procs))
		}
	}
	out := make([]ferry.Process, len(procs))
	for i, p := range procs {
		p.Scale = f.Count(p.Name)
		out[i] = p
	}
	return out, nil
}

// Only restricts the formation to the named processes, foreman's
// `start PROCESS`: each runs as many instances as the formation says, or
// one when it names none.
func (f Formation) Only(procs []ferry.Process, names []string) (Formation, error) {
	only := Formation{}
	for _, name := range names {
		if !hasProcess(procs, name) {
			return nil, fmt.Errorf("no process %q; the processes are %s", name, processNames(procs))
		}
		only[name] = f.Count(name)
		if _, ok := f[name]; !ok && only[name] == 0 {
			only[name] = 1
		}
	}
	return only, nil
}

func hasProcess(procs []ferry.Process, name string) bool {
	for _, p := range procs {
		if p.Name == name {
			return true
		}
	}
	return false
}

func processNames(procs []ferry.Process) string {
	names := make([]string, len(procs))
	for i, p := range procs {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

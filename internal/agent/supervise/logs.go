package supervise

import (
	"sync"

	"github.com/ferrydeploy/ferry/internal/agent/logfile"
)

// Instances with the same log path share one writer: during an upgrade the
// old and the new web.1 run side by side, and two writers rotating one
// file would lose lines.
var sharedLogs = struct {
	sync.Mutex
	m map[string]*sharedLog
}{m: map[string]*sharedLog{}}

type sharedLog struct {
	w    *logfile.Writer
	refs int
}

// openLog returns the writer of path and the function that lets go of it;
// the last one to let go closes it.
func openLog(path string, opt logfile.Options) (*logfile.Writer, func() error, error) {
	sharedLogs.Lock()
	defer sharedLogs.Unlock()
	sl := sharedLogs.m[path]
	if sl == nil {
		w, err := logfile.Open(path, opt)
		if err != nil {
			return nil, nil, err
		}
		sl = &sharedLog{w: w}
		sharedLogs.m[path] = sl
	}
	sl.refs++
	var once sync.Once
	var err error
	return sl.w, func() error {
		once.Do(func() {
			sharedLogs.Lock()
			defer sharedLogs.Unlock()
			sl.refs--
			if sl.refs == 0 {
				delete(sharedLogs.m, path)
				err = sl.w.Close()
			}
		})
		return err
	}, nil
}

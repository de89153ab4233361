package devrun

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// colors are foreman's, in foreman's order: cyan, yellow, green, magenta,
// red, blue, then their bright variants.
var colors = []string{"36", "33", "32", "35", "31", "34", "96", "93", "92", "95", "91", "94"}

// systemColor is foreman's bright white for the runner's own lines.
const systemColor = "97"

// systemName prefixes the runner's own lines.
const systemName = "system"

// maxLine bounds the memory one endless line may take; a longer line is
// printed in pieces of this size rather than held forever.
const maxLine = 64 << 10

// console writes whole prefixed lines from many processes to one writer.
// Each line is written with one Write under a lock, so concurrent output
// never interleaves within a line.
type console struct {
	mu    sync.Mutex
	out   io.Writer
	color bool
	width int // of the widest name, so the bars line up
	now   func() time.Time
}

// line writes text (without its newline) under name's prefix.
func (c *console) line(name, color string, text []byte) {
	var b bytes.Buffer
	if c.color {
		b.WriteString("\x1b[" + color + "m")
	}
	fmt.Fprintf(&b, "%s %-*s | ", c.now().Format("15:04:05"), c.width, name)
	if c.color {
		b.WriteString("\x1b[0m")
	}
	b.Write(text)
	b.WriteByte('\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.Write(b.Bytes()) // a dev console that fails to print has nowhere better to say so
}

// system writes one of the runner's own messages.
func (c *console) system(format string, args ...any) {
	c.line(systemName, systemColor, fmt.Appendf(nil, format, args...))
}

// copyLines prints r's lines under name's prefix until r ends. A final
// line without a newline is printed too; a read error (a deadline set to
// stop waiting for an escaped grandchild) ends the copy like EOF.
func (c *console) copyLines(r io.Reader, name, color string) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		text, err := br.ReadSlice('\n')
		if len(text) > 0 {
			text = bytes.TrimSuffix(bytes.TrimSuffix(text, []byte("\n")), []byte("\r"))
			c.line(name, color, text)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// IsTerminal reports whether w is a terminal, where colour helps rather
// than litters a log file with escape codes.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

package export

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
)

// A process's command is sh source, as in a Procfile: every format runs it
// with /bin/sh -c. When it is one simple command, exec goes in front so the
// program itself, not sh, is the unit's main process and gets the stop
// signal. Anything else — a && b, a | b, a while loop, FOO=1 prog, cd dir —
// runs as the script it is: exec in front of it would run only its first
// part (exec a && b), or be a syntax error (exec while …). sh then stays the
// parent, so the formats stop the whole group rather than sh alone (see
// KillMode in systemd.go; supervisord's stopasgroup).

// runCommand is what sh -c runs for command.
func runCommand(command string) string {
	if first, ok := simpleCommand(command); ok && first != "exec" {
		return "exec " + command
	}
	return command
}

// execd tells whether sh replaces itself with the program command names,
// which is then the unit's main process: a simple command, which
// runCommand execs, or one that says exec itself.
func execd(command string) bool {
	_, ok := simpleCommand(command)
	return ok
}

// simpleCommand reports whether command is a single simple command that
// exec can run, and returns its first word as written. It errs on the side
// of no: a command it cannot classify runs without exec, which is correct,
// only one sh process heavier. exec counts as a program here: exec a is
// simple, exec a && b is not.
func simpleCommand(command string) (first string, ok bool) {
	s := command
	var word strings.Builder // the current word, as written
	words := 0
	quoted := false // the first word had quotes or escapes
	endWord := func() {
		if word.Len() > 0 {
			if words == 0 {
				first = word.String()
			}
			words++
			word.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ' ', '\t':
			endWord()
			continue
		case '\n', ';', '|', '(', ')', '`':
			return "", false
		case '&':
			// Only as part of a redirection: 2>&1, <&3.
			if i == 0 || (s[i-1] != '>' && s[i-1] != '<') {
				return "", false
			}
		case '<':
			if strings.HasPrefix(s[i:], "<<") { // a here-document needs a newline
				return "", false
			}
		case '#':
			if word.Len() == 0 { // a comment: the rest of the line is not code
				endWord()
				return first, words > 0 && firstOK(first, quoted)
			}
		case '\\':
			if i+1 >= len(s) {
				return "", false
			}
			if words == 0 {
				quoted = true
			}
			word.WriteString(s[i : i+2])
			i++
			continue
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return "", false
			}
			if words == 0 {
				quoted = true
			}
			word.WriteString(s[i : i+j+2])
			i += j + 1
			continue
		case '"':
			j, ok := endDoubleQuote(s, i+1)
			if !ok {
				return "", false
			}
			if words == 0 {
				quoted = true
			}
			word.WriteString(s[i : j+1])
			i = j
			continue
		case '$':
			if strings.HasPrefix(s[i:], "$(") {
				return "", false // command substitution: may hold anything
			}
			if strings.HasPrefix(s[i:], "${") {
				j, ok := endBrace(s, i+2)
				if !ok {
					return "", false
				}
				word.WriteString(s[i : j+1])
				i = j
				continue
			}
		}
		word.WriteByte(c)
	}
	endWord()
	return first, words > 0 && firstOK(first, quoted)
}

// firstOK says whether exec can run a command that starts with word.
func firstOK(word string, quoted bool) bool {
	if quoted {
		// "prog" or 'my prog': quotes make even a keyword a plain word.
		return true
	}
	if name, _, ok := strings.Cut(word, "="); ok && ferry.IsEnvName(name) {
		return false // FOO=1 prog: exec would look for a program named FOO=1
	}
	return !shellOnly[word]
}

// shellOnly are the reserved words and the built-ins that have no program
// of their own, so exec cannot run them. exec itself is in the list of
// simple commands that need no other exec (see execs).
var shellOnly = map[string]bool{
	"!": true, "{": true, "}": true, "if": true, "then": true, "else": true, "elif": true, "fi": true,
	"case": true, "esac": true, "while": true, "until": true, "for": true, "do": true, "done": true,
	"in": true, "function": true, "select": true, "[[": true, "]]": true, "time": true, "coproc": true,
	".": true, ":": true, "source": true, "eval": true, "set": true, "unset": true, "export": true,
	"readonly": true, "local": true, "cd": true, "trap": true, "ulimit": true, "umask": true,
	"wait": true, "read": true, "shift": true, "exit": true, "return": true, "break": true,
	"continue": true, "alias": true, "unalias": true, "command": true, "builtin": true,
	"getopts": true, "hash": true, "type": true, "jobs": true, "fg": true, "bg": true,
}

// endDoubleQuote returns the index of the " that closes the string opened
// before i; a command substitution inside makes it unclassifiable.
func endDoubleQuote(s string, i int) (int, bool) {
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '`':
			return 0, false
		case '$':
			if strings.HasPrefix(s[i:], "$(") {
				return 0, false
			}
		case '"':
			return i, true
		}
	}
	return 0, false
}

// endBrace returns the index of the } that closes a ${ opened before i.
func endBrace(s string, i int) (int, bool) {
	depth := 1
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return 0, false
			}
			i += j + 1
		case '"':
			j, ok := endDoubleQuote(s, i+1)
			if !ok {
				return 0, false
			}
			i = j
		case '`', '(':
			return 0, false
		case '{':
			depth++
		case '}':
			if depth--; depth == 0 {
				return i, true
			}
		}
	}
	return 0, false
}

// checkSyntax asks sh whether command parses, so a command the unit could
// only fail on in a restart loop is refused at export with sh's own words.
// Without a /bin/sh here there is nothing to ask, and the check is skipped.
func checkSyntax(name, command string) error {
	sh, err := exec.LookPath("/bin/sh")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, sh, "-n", "-c", command)
	cmd.Stderr = &stderr
	var exit *exec.ExitError
	if err := cmd.Run(); errors.As(err, &exit) {
		msg := strings.TrimPrefix(strings.TrimSpace(stderr.String()), "sh: 1: ")
		return ferry.Errorf(ferry.EINVALID, "export: the command of %s is not valid sh (%s): %s; fix it, or put it in a script", name, msg, command)
	}
	// Any other error is sh failing to start, which says nothing about
	// the command.
	return nil
}

package ferry

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The names below are checked here and nowhere else, so that what one part
// of ferry accepts another never refuses: an app name the server took but
// the agent's desired-state parser did not would fail the whole document
// of every host in the group.
//
// Every name is ASCII, starts with a letter or digit (so it is never ".",
// "..", "-x" or ".hidden"), has no slash, space or NUL, and is at most
// MaxNameLen characters: each is safe as one path element.

// MaxNameLen is the longest app, process, host or group name: a DNS
// label's limit, which ferry.yaml's and the server's checks had.
const MaxNameLen = 63

type nameRule struct {
	kind    string // what the message calls it
	upper   bool   // A-Z allowed
	dot     bool   // '.' allowed after the first character
	allowed string // the rule, for the message
}

var (
	// App names become directories (apps/<app>/), systemd, supervisord and
	// launchd unit names and store keys: lowercase, so two apps never
	// share a directory on a case-insensitive file system, and no dot,
	// the separator of launchd labels (APP.PROC.N).
	appRule = nameRule{kind: "app name", allowed: "lowercase letters, digits, - and _"}
	// Process names become file names (logs/<proc>.<n>.log, matched by
	// the glob <proc>.*.log, so no dot) and unit names.
	processRule = nameRule{kind: "process name", upper: true, allowed: "letters, digits, - and _"}
	// Host names are often a machine's host name, which has dots; group
	// names have had the same rule since hosts and groups were first
	// checked by the server.
	hostRule  = nameRule{kind: "host name", upper: true, dot: true, allowed: "letters, digits, ., - and _"}
	groupRule = nameRule{kind: "group name", upper: true, dot: true, allowed: "letters, digits, ., - and _"}
)

// CheckAppName returns an EINVALID error unless s is a valid app name:
// lowercase letters, digits, - and _, starting with a letter or digit, at
// most MaxNameLen characters.
func CheckAppName(s string) error { return appRule.check(s) }

// CheckProcessName returns an EINVALID error unless s is a valid process
// name: letters, digits, - and _, starting with a letter or digit, at most
// MaxNameLen characters.
func CheckProcessName(s string) error { return processRule.check(s) }

// CheckHostName returns an EINVALID error unless s is a valid host name:
// letters, digits, ., - and _, starting with a letter or digit, at most
// MaxNameLen characters.
func CheckHostName(s string) error { return hostRule.check(s) }

// CheckGroupName returns an EINVALID error unless s is a valid group name:
// letters, digits, ., - and _, starting with a letter or digit, at most
// MaxNameLen characters.
func CheckGroupName(s string) error { return groupRule.check(s) }

func (r nameRule) ok(c byte, first bool) bool {
	switch {
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return true
	case 'A' <= c && c <= 'Z':
		return r.upper
	case first:
		return false
	case c == '-', c == '_':
		return true
	case c == '.':
		return r.dot
	}
	return false
}

func (r nameRule) check(s string) error {
	var why string
	for i := 0; i < len(s) && why == ""; i++ {
		switch c := s[i]; {
		case r.ok(c, i == 0):
		case i == 0 && r.ok(c, false):
			why = fmt.Sprintf("it starts with %q", c)
		case c >= utf8.RuneSelf:
			if ch, n := utf8.DecodeRuneInString(s[i:]); n > 1 {
				why = fmt.Sprintf("%q is not allowed", ch)
			} else {
				why = fmt.Sprintf("byte %#x (not UTF-8) is not allowed", c)
			}
		default:
			why = fmt.Sprintf("%q is not allowed", c)
		}
	}
	switch {
	case why != "":
	case s == "":
		why = "it is empty"
	case len(s) > MaxNameLen: // all ASCII by now: bytes are characters
		why = fmt.Sprintf("it has %d characters", len(s))
	default:
		return nil
	}
	return Errorf(EINVALID, "%q is not a valid %s: %s; use %s, starting with a letter or digit, at most %d characters",
		s, r.kind, why, r.allowed, MaxNameLen)
}

// CheckSHA256 returns an EINVALID error unless s is a sha256 as ferry
// writes it: 64 lowercase hex digits. Callers that accept uppercase from a
// person lower it first; stored digests, keys and file names are lowercase.
func CheckSHA256(s string) error {
	if n := utf8.RuneCountInString(s); n != 64 {
		return Errorf(EINVALID, "%q is not a sha256: want 64 hex digits, got %d characters", s, n)
	}
	for _, c := range s {
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			return Errorf(EINVALID, "%q is not a sha256 as ferry writes it: write its hex digits in lowercase", s)
		default:
			return Errorf(EINVALID, "%q is not a sha256: %q is not a hex digit (0-9, a-f)", s, c)
		}
	}
	return nil
}

// FormatRelease is how a person reads release n of an app: "v3". The
// server numbers an app's releases from 1.
func FormatRelease(n int) string { return "v" + strconv.Itoa(n) }

// ParseRelease reads a release number as FormatRelease writes it, "v12";
// "V12" and a bare "12" are taken too, as people type them. No sign, no
// space, and the number starts at 1.
func ParseRelease(s string) (int, error) {
	t := s
	if strings.HasPrefix(t, "v") || strings.HasPrefix(t, "V") {
		t = t[1:]
	}
	n, err := strconv.Atoi(t)
	if t == "" || strings.Trim(t, "0123456789") != "" || err != nil || n < 1 {
		return 0, Errorf(EINVALID, "%q is not a release number: want v and a number from 1 up, like v12", s)
	}
	return n, nil
}

package export

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/ferrydeploy/ferry"
)

// envValueEscaper writes a value inside double quotes so that systemd's
// EnvironmentFile parser (src/basic/env-file.c) and sh's `.` read it alike:
// both drop a backslash before " \ ` $ and keep every other character,
// newlines included, as it is. No other backslash is ever written, so
// the two parsers' different handling of "\n" or "\t" never comes up.
var envValueEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", `$`, `\$`)

// checkEnv rejects what the two parsers would not read alike: keys that are
// not shell names, invalid UTF-8 (systemd drops such a line) and NUL.
// Newlines are allowed: both keep them inside double quotes, so a PEM key
// from .env survives.
func checkEnv(k, v string) error {
	if !ferry.IsEnvName(k) {
		return ferry.Errorf(ferry.EINVALID, "export: environment: %q is not a valid variable name (letters, digits and _, not starting with a digit)", k)
	}
	if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		return ferry.Errorf(ferry.EINVALID, "export: environment: the value of %s is not valid UTF-8 text", k)
	}
	return nil
}

// renderEnvFile is an instance's environment file, keys sorted so that
// re-exports are byte-identical.
func renderEnvFile(format string, in instance) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n# %s\n# Mode 0600: it may hold secrets. Read by %s as %s.\n",
		marker(in.app, format), markerNote, format, envFileReader(format))
	keys := make([]string, 0, len(in.env))
	for k := range in.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=\"%s\"\n", k, envValueEscaper.Replace(in.env[k]))
	}
	return []byte(b.String())
}

func envFileReader(format string) string {
	if format == "systemd" {
		return "EnvironmentFile="
	}
	return "the unit's sh wrapper (set -a; . FILE)"
}

// wrapperScript is what supervisord and launchd run under /bin/sh -c: they
// cannot read an environment file themselves, so sh sources it (exporting
// every variable) and then runs the command, replacing itself with it when
// it is a simple command (see runCommand), which keeps the process's pid and
// lets it receive the stop signal directly.
func wrapperScript(envPath, command string) string {
	return "set -a; . " + shellWord(envPath) + "; set +a; " + runCommand(command)
}

// shellWord quotes s only when it holds more than letters, digits and
// ./_-, so the usual path reads plainly inside the outer quotes.
func shellWord(s string) string {
	if s != "" && plainWord.MatchString(s) {
		return s
	}
	return shellQuote(s)
}

var plainWord = regexp.MustCompile(`^[A-Za-z0-9./_-]+$`)

// shellQuote single-quotes s for sh, and for Python's shlex, which
// supervisord splits command= with and which reads quotes as sh does.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

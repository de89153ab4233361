package ferry

import (
	"strings"
	"testing"
)

// nameCase is one name, whether each kind accepts it, and for a refusal a
// part of the message.
type nameCase struct {
	name                   string
	app, proc, host, group bool
	why                    string // in every refusal's message
}

func TestCheckNames(t *testing.T) {
	l63, l64 := strings.Repeat("a", 63), strings.Repeat("a", 64)
	cases := []nameCase{
		{name: "web", app: true, proc: true, host: true, group: true},
		{name: "a", app: true, proc: true, host: true, group: true},
		{name: "0", app: true, proc: true, host: true, group: true},
		{name: "my-app_2", app: true, proc: true, host: true, group: true},
		{name: "9lives", app: true, proc: true, host: true, group: true},
		{name: l63, app: true, proc: true, host: true, group: true},
		{name: l64, why: "it has 64 characters"},
		{name: strings.Repeat("é", 20), why: `'é' is not allowed`},
		{name: "", why: "it is empty"},
		// Uppercase: processes (Procfile's Web), hosts and groups, not apps.
		{name: "Web", proc: true, host: true, group: true, why: `'W' is not allowed`},
		{name: "webWorker", proc: true, host: true, group: true, why: `'W' is not allowed`},
		// Dots: host and group names (a machine's FQDN), never apps or processes.
		{name: "web-1.example.com", host: true, group: true, why: `'.' is not allowed`},
		{name: "eu.prod", host: true, group: true, why: `'.' is not allowed`},
		{name: "a..b", host: true, group: true, why: `'.' is not allowed`},
		{name: "host.", host: true, group: true, why: `'.' is not allowed`},
		{name: ".", why: `'.'`},
		{name: "..", why: `'.'`},
		{name: ".hidden", why: `'.'`},
		{name: "-web", why: `it starts with '-'`},
		{name: "_web", why: `it starts with '_'`},
		{name: "a/b", why: `'/' is not allowed`},
		{name: "../etc", why: `'.'`},
		{name: "a\x00b", why: `'\x00' is not allowed`},
		{name: "we b", why: `' ' is not allowed`},
		{name: "web\n", why: `'\n' is not allowed`},
		{name: "a:b", why: `':' is not allowed`},
		{name: "a+b", why: `'+' is not allowed`},
		{name: "bad\xffutf8", why: `byte 0xff (not UTF-8) is not allowed`},
	}
	kinds := []struct {
		kind  string
		check func(string) error
		want  func(nameCase) bool
	}{
		{"app name", CheckAppName, func(c nameCase) bool { return c.app }},
		{"process name", CheckProcessName, func(c nameCase) bool { return c.proc }},
		{"host name", CheckHostName, func(c nameCase) bool { return c.host }},
		{"group name", CheckGroupName, func(c nameCase) bool { return c.group }},
	}
	for _, c := range cases {
		for _, k := range kinds {
			err := k.check(c.name)
			if k.want(c) {
				if err != nil {
					t.Errorf("%s %q: %v, want it accepted", k.kind, c.name, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s %q accepted, want it refused", k.kind, c.name)
				continue
			}
			if ErrorCode(err) != EINVALID {
				t.Errorf("%s %q: kind %q, want %q", k.kind, c.name, ErrorCode(err), EINVALID)
			}
			msg := err.Error()
			// Says what was given, what it is and what is allowed.
			for _, part := range []string{"is not a valid " + k.kind, "starting with a letter or digit, at most 63 characters", c.why} {
				if !strings.Contains(msg, part) {
					t.Errorf("%s %q: %q does not say %q", k.kind, c.name, msg, part)
				}
			}
		}
	}
}

// TestNameRulesSay checks that each refusal names the characters its kind
// allows.
func TestNameRulesSay(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{CheckAppName("Web"), `"Web" is not a valid app name: 'W' is not allowed; use lowercase letters, digits, - and _, starting with a letter or digit, at most 63 characters`},
		{CheckProcessName("a.b"), `"a.b" is not a valid process name: '.' is not allowed; use letters, digits, - and _,`},
		{CheckHostName("-h"), `"-h" is not a valid host name: it starts with '-'; use letters, digits, ., - and _,`},
		{CheckGroupName(""), `"" is not a valid group name: it is empty; use letters, digits, ., - and _,`},
	} {
		if tc.err == nil || !strings.HasPrefix(tc.err.Error(), tc.want) {
			t.Errorf("got %v, want %s…", tc.err, tc.want)
		}
	}
}

func TestCheckSHA256(t *testing.T) {
	sum := "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, tc := range []struct {
		in   string
		want string // "" when valid, else part of the message
	}{
		{sum, ""},
		{strings.Repeat("0", 64), ""},
		{strings.Repeat("f", 64), ""},
		{"", "want 64 hex digits, got 0 characters"},
		{"abc", "want 64 hex digits, got 3 characters"},
		{sum[:63], "got 63 characters"},
		{sum + "0", "got 65 characters"},
		{strings.ToUpper(sum), "write its hex digits in lowercase"},
		{sum[:63] + "A", "write its hex digits in lowercase"},
		{strings.Repeat("g", 64), `'g' is not a hex digit (0-9, a-f)`},
		{"sha256:" + sum[7:], `'s' is not a hex digit`},
		{sum[:63] + "\x00", `'\x00' is not a hex digit`},
		{sum[:62] + " \n", `' ' is not a hex digit`},
		{sum[:63] + "é", `'é' is not a hex digit`},     // 64 characters, 65 bytes
		{strings.Repeat("é", 32), "got 32 characters"}, // 64 bytes, 32 characters
		{"../../../../etc/passwd" + sum[22:], `'.' is not a hex digit`},
	} {
		err := CheckSHA256(tc.in)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v, want it accepted", tc.in, err)
		case tc.want == "":
		case err == nil:
			t.Errorf("%q accepted, want %q", tc.in, tc.want)
		case ErrorCode(err) != EINVALID || !strings.Contains(err.Error(), "is not a sha256") || !strings.Contains(err.Error(), tc.want):
			t.Errorf("%q: %v (kind %s), want EINVALID saying %q", tc.in, err, ErrorCode(err), tc.want)
		}
	}
}

func TestReleases(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int // 0: refused
	}{
		{"v1", 1},
		{"v3", 3},
		{"V12", 12},
		{"12", 12},
		{"v007", 7},
		{"v9223372036854775807", 9223372036854775807},
		{"v9223372036854775808", 0}, // overflows int
		{"", 0},
		{"v", 0},
		{"V", 0},
		{"v0", 0},
		{"0", 0},
		{"v-1", 0},
		{"-1", 0},
		{"v+3", 0},
		{"+3", 0},
		{"vv3", 0},
		{"vV3", 0},
		{" v3", 0},
		{"v3 ", 0},
		{"v3.0", 0},
		{"v3-1a2b3c4d", 0}, // an agent's release directory, not a release
		{"r3", 0},
		{"v٣", 0}, // an Arabic-Indic three
		{"v1e3", 0},
		{"0x10", 0},
	} {
		n, err := ParseRelease(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("ParseRelease(%q) = %d, want it refused", tc.in, n)
			} else if ErrorCode(err) != EINVALID || !strings.Contains(err.Error(), "is not a release number: want v and a number from 1 up, like v12") {
				t.Errorf("ParseRelease(%q): %v (kind %s)", tc.in, err, ErrorCode(err))
			}
			continue
		}
		if err != nil || n != tc.want {
			t.Errorf("ParseRelease(%q) = %d, %v; want %d", tc.in, n, err, tc.want)
		}
	}
	for _, n := range []int{1, 2, 10, 123456} {
		s := FormatRelease(n)
		if back, err := ParseRelease(s); err != nil || back != n {
			t.Errorf("ParseRelease(FormatRelease(%d) = %q) = %d, %v", n, s, back, err)
		}
	}
	if got := FormatRelease(3); got != "v3" {
		t.Errorf("FormatRelease(3) = %q, want v3", got)
	}
}

package pathmatch

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern string
		path    string
		dir     bool
		want    bool
	}{
		{"*.pid", "test.pid", false, true},
		{"*.pid", "a/b/test.pid", false, true},
		{"*.pid", "test.pidx", false, false},
		{"baz", "foo/baz", false, true},
		{"baz", "foo/bazz", false, false},
		{"tmp/", "tmp", true, true},
		{"tmp/", "tmp", false, false},
		{"tmp/", "a/tmp", true, true},
		{"/config/local.yml", "config/local.yml", false, true},
		{"/config/local.yml", "x/config/local.yml", false, false},
		{"log/*.gz", "app/log/a.gz", false, true},
		{"log/*.gz", "log/a.gz", false, true},
		{"log/*.gz", "log/x/a.gz", false, false},
		{"log/*.gz", "xlog/a.gz", false, false},
		{"/a/**/z", "a/b/c/z", false, true},
		{"/a/**/z", "b/a/c/z", false, false},
		{"file?.txt", "file1.txt", false, true},
		{"file?.txt", "file10.txt", false, false},
		{"[ab].txt", "a.txt", false, true},
		{"[!ab].txt", "a.txt", false, false},
		{"[!ab].txt", "c.txt", false, true},
		{"a.b", "axb", false, false},
	}
	for _, tt := range tests {
		m, err := New(tt.pattern)
		if err != nil {
			t.Fatalf("New(%q): %v", tt.pattern, err)
		}
		if got := m.Match(tt.path, tt.dir); got != tt.want {
			t.Errorf("%q matching %q (dir %v) = %v, want %v", tt.pattern, tt.path, tt.dir, got, tt.want)
		}
	}
}

func TestAddFromAndErrors(t *testing.T) {
	m := &Matcher{}
	if err := m.AddFrom(strings.NewReader("# comment\n; also\n\n*.log\n")); err != nil {
		t.Fatal(err)
	}
	if !m.Match("x/y.log", false) || m.Match("y.txt", false) {
		t.Fatal("exclude-from patterns not applied")
	}
	if _, err := New("[abc"); err == nil {
		t.Fatal("unclosed class accepted")
	}
	var zero *Matcher
	if zero.Match("a", false) || !zero.Empty() {
		t.Fatal("nil matcher matched")
	}
}

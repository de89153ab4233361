package manifest

import (
	"strings"
	"testing"
)

func TestParseManifest(t *testing.T) {
	m, err := Parse([]byte(`
src: s3://example.com/path/to/archive.tar.gz
checksum: e0840daaa97cd2cf2175f9e5d133ffb3324a2b93
dest: /home/stretcher/app
commands:
  pre:
    - echo 'staring deploy'
    - echo 'xxx'
  post:
    - echo 'deploy done'
  success:
    - 'some-command-with-argument-includes-colon ":foo: bar"'
`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Src != "s3://example.com/path/to/archive.tar.gz" || m.Checksum != "e0840daaa97cd2cf2175f9e5d133ffb3324a2b93" ||
		len(m.Commands.Pre) != 2 || len(m.Commands.Post) != 1 || m.SyncStrategy != StrategyRsync || m.DestMode.Mode != 0o755 {
		t.Fatalf("parsed %+v", m)
	}
	if m.Commands.Success[0] != `some-command-with-argument-includes-colon ":foo: bar"` {
		t.Fatalf("success[0] = %q", m.Commands.Success[0])
	}
}

func TestParseDestMode(t *testing.T) {
	for _, s := range []string{"0751", "751", `"0751"`, "0o751"} {
		m, err := Parse([]byte("dest: /x\ndest_mode: " + s + "\n"))
		if err != nil || m.DestMode.Mode != 0o751 {
			t.Errorf("dest_mode: %s → %v, %v", s, m, err)
		}
	}
}

func TestParseTemplates(t *testing.T) {
	t.Setenv("FERRY_TEST_DEST", "/srv/x")
	m, err := Parse([]byte(`dest: {{ must_env "FERRY_TEST_DEST" }}
src: {{ env "FERRY_TEST_UNSET" "file:///default.tar" }}
checksum: ` + strings.Repeat("a", 64) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Dest != "/srv/x" || m.Src != "file:///default.tar" {
		t.Fatalf("rendered %q %q", m.Dest, m.Src)
	}
	_, err = Parse([]byte(`dest: {{ must_env "FERRY_TEST_UNSET" }}`))
	if err == nil || !strings.Contains(err.Error(), "FERRY_TEST_UNSET is not set") {
		t.Fatalf("must_env of an unset variable: %v", err)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	sum := strings.Repeat("a", 64)
	tests := []struct{ yml, want string }{
		{"src: file:///a.tar\nchecksum: " + sum + "\n", "dest: missing"},
		{"src: file:///a.tar\ndest: /x\n", "checksum: missing"},
		{"src: file:///a.tar\ndest: /x\nchecksum: abc\n", "checksum"},
		{"src: file:///a.tar\ndest: /x\nchecksum: " + strings.Repeat("z", 64) + "\n", "not hexadecimal"},
		{"dest: /x\nsync_strategy: copy\n", "sync_strategy"},
		{"dest: /x\ndest_mode: rwx\n", "octal"},
		{"dest: /x\nsrcc: y\n", `unknown field "srcc"`},
		{"dest: /x\ncommands:\n  pre: echo\n", "pre"},
		{"src: file:///a.tar\ndest: /x\nchecksum: " + sum + "\nkeep_releases: 1\n", "keep_releases"},
		{"src: file:///a.tar\ndest: /x\nchecksum: " + sum + "\nshared: [log/]\n", "sync_strategy: release"},
		{"dest: {{ nosuchfunc }}\n", "nosuchfunc"},
		{"dest: [\n", "dest"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want it to mention %q", tt.yml, err, tt.want)
		}
	}
}

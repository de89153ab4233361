package desired

import (
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry"
)

const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestParse(t *testing.T) {
	tests := []struct {
		name, doc string
		want      *Doc
	}{
		{"empty", "", &Doc{}},
		{"comment only", "# nothing here\n", &Doc{}},
		{"no apps", "apps: {}\n", &Doc{}},
		{"null apps", "apps:\n", &Doc{}},
		{"full", `apps:
  hello:
    artifact: file:///srv/dist/hello-v3.tar.zst
    sha256: ` + strings.ToUpper(sum) + `
    release: v3
    env: {LOG_LEVEL: info, PORT: 8080, VERSION: 1.10, MODE: 0755, DEBUG: true, MOTD: "a\tb", EMPTY: ""}
    scale: {web: 2, worker: 0}
  w2:
    artifact: /srv/dist/w2.tar.zst
    sha256: ` + sum + `
`, &Doc{Apps: map[string]App{
			"hello": {Artifact: "file:///srv/dist/hello-v3.tar.zst", SHA256: sum, Release: "v3",
				Env:   map[string]string{"LOG_LEVEL": "info", "PORT": "8080", "VERSION": "1.10", "MODE": "0755", "DEBUG": "true", "MOTD": "a\tb", "EMPTY": ""},
				Scale: map[string]int{"web": 2, "worker": 0}},
			"w2": {Artifact: "/srv/dist/w2.tar.zst", SHA256: sum},
		}}},
		{"json", `{"apps": {"api": {"artifact": "https://example.com/a.tar.zst", "sha256": "` + sum + `", "scale": {"web": 3}}}}`,
			&Doc{Apps: map[string]App{"api": {Artifact: "https://example.com/a.tar.zst", SHA256: sum, Scale: map[string]int{"web": 3}}}}},
		{"anchors", `apps:
  a: &base
    artifact: s3://bucket/a.tar.zst
    sha256: ` + sum + `
    env: {A: "1"}
  b:
    <<: *base
    release: v9
`, &Doc{Apps: map[string]App{
			"a": {Artifact: "s3://bucket/a.tar.zst", SHA256: sum, Env: map[string]string{"A": "1"}},
			"b": {Artifact: "s3://bucket/a.tar.zst", SHA256: sum, Env: map[string]string{"A": "1"}, Release: "v9"},
		}}},
		{"block string", "apps:\n  a:\n    artifact: x\n    sha256: " + sum + "\n    env:\n      MOTD: |\n        hello\n        world\n",
			&Doc{Apps: map[string]App{"a": {Artifact: "x", SHA256: sum, Env: map[string]string{"MOTD": "hello\nworld\n"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if d.Apps == nil {
				t.Error("Apps is nil; want an empty map")
			}
			if !d.Equal(tt.want) {
				t.Fatalf("got %+v\nwant %+v", d, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	app := func(extra string) string {
		return "apps:\n  web:\n    artifact: file:///a.tar.zst\n    sha256: " + sum + "\n" + extra
	}
	tests := []struct{ doc, want string }{
		{"aps: {}\n", `aps: unknown field "aps" (a document has only apps) (line 1)`},
		{app("    artifcat: x\n"), `apps.web.artifcat: unknown field "artifcat" (an app has artifact, sha256, release, group, env, scale, config_rev and signatures) (line 5)`},
		{"apps:\n  web:\n    sha256: " + sum + "\n", "apps.web.artifact: missing"},
		{"apps:\n  web:\n    artifact: x\n", "apps.web.sha256: missing"},
		{"apps:\n  web:\n", "apps.web.artifact: missing"},
		{"apps:\n  web: {artifact: x, sha256: abc}\n", `apps.web.sha256: "abc" is not a sha256: want 64 hex digits, got 3 characters`},
		{"apps:\n  web: {artifact: x, sha256: " + strings.Repeat("g", 64) + "}\n", "not a hex digit"},
		{"apps:\n  web: {artifact: \"http://a b/%zz\", sha256: " + sum + "}\n", "apps.web.artifact: not a valid URL"},
		{"apps:\n  Web: {artifact: x, sha256: " + sum + "}\n", `apps.Web: "Web" is not a valid app name`},
		{"apps:\n  -web: {artifact: x, sha256: " + sum + "}\n", "is not a valid app name"},
		{app("    env: {1FOO: x}\n"), `apps.web.env: "1FOO" is not a valid variable name`},
		{app("    env: {FOO-BAR: x}\n"), `"FOO-BAR" is not a valid variable name`},
		{app("    env: {FOO: [a, b]}\n"), "apps.web.env.FOO: must be a string, not a sequence (line 5)"},
		{app("    env: FOO=bar\n"), "apps.web.env: string was used where mapping is expected (line 5)"},
		{app("    scale: {web: -1}\n"), "apps.web.scale.web: -1 is negative; use 0"},
		{app("    scale: {web: 1.5}\n"), "apps.web.scale.web: 1.5 is not a whole number (line 5)"},
		{app("    scale: {web: two}\n"), "apps.web.scale.web: two is not a whole number"},
		{app("    scale: {we b: 1}\n"), `apps.web.scale: "we b" is not a valid process name`},
		// What is wrong with a name or digest, by ferry's rules.
		{"apps:\n  web: {artifact: x, sha256: " + strings.Repeat("g", 64) + "}\n", `apps.web.sha256: "` + strings.Repeat("g", 64) + `" is not a sha256: 'g' is not a hex digit (0-9, a-f)`},
		{"apps:\n  -web: {artifact: x, sha256: " + sum + "}\n", `apps.-web: "-web" is not a valid app name: it starts with '-'; use lowercase letters, digits, - and _`},
		{app("    scale: {web.1: 1}\n"), `apps.web.scale: "web.1" is not a valid process name: '.' is not allowed`},
		{app("    artifact: y\n"), `mapping key "artifact" already defined`},
		{"apps: [web]\n", "apps: sequence was used where mapping is expected (line 1)"},
		{"apps:\n  web: 3\n", "apps.web: "},
		{"- apps\n", "line 1: sequence was used where mapping is expected"},
		{"apps: {}\n---\napps: {}\n", "more than one YAML document"},
		{"apps: {\n", "line 1"},
		// Every problem is listed, not just the first.
		{"apps:\n  a: {artifact: x}\n  b: {sha256: " + sum + "}\n", "apps.a.sha256: missing; set the artifact's sha256 (64 hex digits, as `ferry build` and sha256sum print it)\napps.b.artifact: missing"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q:\n got error %v\nwant it to contain %q", tt.doc, err, tt.want)
			continue
		}
		if ferry.ErrorCode(err) != ferry.EINVALID {
			t.Errorf("%q: code %q, want %q", tt.doc, ferry.ErrorCode(err), ferry.EINVALID)
		}
	}
}

func TestEqual(t *testing.T) {
	a := App{Artifact: "x", SHA256: sum, Env: map[string]string{"A": "1"}, Scale: map[string]int{}}
	b := App{Artifact: "x", SHA256: sum, Env: map[string]string{"A": "1"}}
	if !a.Equal(b) {
		t.Error("an empty map should equal a nil one")
	}
	b.Env["A"] = "2"
	if a.Equal(b) {
		t.Error("different env compared equal")
	}
	var none *Doc
	if !none.Equal(&Doc{}) || (&Doc{Apps: map[string]App{"a": a}}).Equal(&Doc{}) {
		t.Error("Doc.Equal")
	}
}

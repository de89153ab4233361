package export

import (
	"encoding/xml"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// The worker of testApp prints "PORT|FERRY_APP|QUOTES", so running its
// command as each init system would shows the whole chain works: the
// config parser, the quoting, sh sourcing the env file, exec.
const workerOutput = `5100|hello|it's "quoted"` + "\n"

// TestSupervisordCommandRuns reads hello.conf with Python's configparser and
// shlex, set up as supervisord 4 does, and runs the resulting argv.
func TestSupervisordCommandRuns(t *testing.T) {
	python := testenv.NeedCommand(t, "python3")
	dir := t.TempDir()
	if _, err := Export("supervisord", Options{App: testApp(), Dir: dir, Root: dir, Env: secretEnv}); err != nil {
		t.Fatal(err)
	}
	const script = `
import configparser, shlex, sys
p = configparser.RawConfigParser(inline_comment_prefixes=(';', '#'), strict=False)
p.read(sys.argv[1])
assert p.get('group:hello', 'programs') == 'hello-web-1,hello-web-2,hello-worker-1', p.get('group:hello', 'programs')
assert p.get('program:hello-worker-1', 'stopasgroup') == 'true'
cmd = p.get('program:hello-worker-1', 'command') % {'program_name': 'hello-worker-1'}
sys.stdout.write('\0'.join(shlex.split(cmd)))
`
	out, err := exec.Command(python, "-c", script, filepath.Join(dir, "hello.conf")).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	runArgv(t, strings.Split(string(out), "\x00"), dir)
}

// TestLaunchdPlist parses every plist with encoding/xml and runs the
// worker's ProgramArguments.
func TestLaunchdPlist(t *testing.T) {
	dir := t.TempDir()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Export("launchd", Options{App: testApp(), Dir: dir, Root: dir, User: me.Username, Env: secretEnv}); err != nil {
		t.Fatal(err)
	}
	plists, _ := filepath.Glob(filepath.Join(dir, "*.plist"))
	if len(plists) != 3 {
		t.Fatalf("plists: %v", plists)
	}
	for _, p := range plists {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := plistDict(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		label := strings.TrimSuffix(filepath.Base(p), ".plist")
		if d.strings["Label"] != label || d.strings["UserName"] != me.Username || d.strings["WorkingDirectory"] != dir || !d.bools["KeepAlive"] {
			t.Errorf("%s: %+v", p, d)
		}
		if label == "hello.worker.1" {
			if d.ints["ExitTimeOut"] != "2" {
				t.Errorf("ExitTimeOut %q, want 2", d.ints["ExitTimeOut"])
			}
			runArgv(t, d.array, dir)
		}
	}
}

func runArgv(t *testing.T, argv []string, dir string) {
	t.Helper()
	if len(argv) != 3 || argv[0] != "/bin/sh" || argv[1] != "-c" {
		t.Fatalf("argv %q, want /bin/sh -c SCRIPT", argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, []string{}
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != workerOutput {
		t.Errorf("%q printed %q (%v), want %q", argv, out, err, workerOutput)
	}
}

// dict is the one <dict> of a launchd plist, flattened by value type.
type dict struct {
	strings map[string]string
	ints    map[string]string
	bools   map[string]bool
	array   []string
}

func plistDict(b []byte) (dict, error) {
	var doc struct {
		XMLName xml.Name `xml:"plist"`
		Dict    struct {
			Items []struct {
				XMLName xml.Name
				Text    string   `xml:",chardata"`
				Strings []string `xml:"string"`
			} `xml:",any"`
		} `xml:"dict"`
	}
	d := dict{strings: map[string]string{}, ints: map[string]string{}, bools: map[string]bool{}}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return d, err
	}
	var key string
	for _, it := range doc.Dict.Items {
		switch it.XMLName.Local {
		case "key":
			key = it.Text
		case "string":
			d.strings[key] = it.Text
		case "integer":
			d.ints[key] = it.Text
		case "true":
			d.bools[key] = true
		case "array":
			d.array = it.Strings
		}
	}
	return d, nil
}

package export

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/ferrydeploy/ferry"
)

// renderSupervisord writes APP.conf with a [program:APP-PROC-N] per instance
// and [group:APP] over them, plus one environment file per instance.
// supervisord cannot read an environment file, and its environment= would
// put the secrets in the config, so each program runs /bin/sh, which
// sources the file and runs the command (see wrapperScript). The
// environment files belong to --user when run as root, because the
// wrapper reads them after supervisord has switched to that user.
func renderSupervisord(o *Options, insts []instance) ([]File, error) {
	dir, err := iniValue("root", o.Root)
	if err != nil {
		return nil, err
	}
	usr, err := iniValue("user", o.User)
	if err != nil {
		return nil, err
	}
	var files []File
	var b strings.Builder
	fmt.Fprintf(&b, "; %s\n; %s\n", marker(o.App.Name, "supervisord"), markerNote)
	var programs []string
	for _, in := range insts {
		name := instanceName("supervisord", in)
		files = append(files, File{Name: name + ".env", Data: renderEnvFile("supervisord", in), Mode: 0o600, Owner: o.User})
		programs = append(programs, name)
		fmt.Fprintf(&b, "\n[program:%s]\n", name)
		fmt.Fprintf(&b, "command=/bin/sh -c %s\n", iniCommand(shellQuote(wrapperScript(in.envPath, in.proc.Command))))
		fmt.Fprintf(&b, "directory=%s\n", dir)
		if o.User != "" {
			fmt.Fprintf(&b, "user=%s\n", usr)
		}
		b.WriteString("autostart=true\nautorestart=true\nstartsecs=1\nstopsignal=TERM\n")
		fmt.Fprintf(&b, "stopwaitsecs=%d\n", seconds(in.proc.StopTimeout))
		// The group, not only sh's pid: a command that forks still stops.
		b.WriteString("stopasgroup=true\nkillasgroup=true\n")
	}
	fmt.Fprintf(&b, "\n[group:%s]\nprograms=%s\n", o.App.Name, strings.Join(programs, ","))
	files = append(files, File{Name: o.App.Name + ".conf", Data: []byte(b.String()), Mode: 0o644})
	return files, nil
}

// inlineComment is where supervisord's ConfigParser would cut a value: a ;
// or # after white space starts an inline comment.
var inlineComment = regexp.MustCompile(`(\s)([;#])`)

// iniCommand keeps a command whole through supervisord's parser: %% for its
// %(name)s expansions, and an empty pair of single quotes between white
// space and ; or # so no inline comment starts there. s must come from
// shellQuote, whose white space is always inside quotes, where the pair just
// ends and restarts them.
func iniCommand(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	return inlineComment.ReplaceAllString(s, "$1''$2")
}

// iniValue escapes a value supervisord takes as it is, such as directory=,
// where no quoting can protect an inline comment.
func iniValue(what, s string) (string, error) {
	if inlineComment.MatchString(s) {
		return "", ferry.Errorf(ferry.EINVALID, "export: supervisord: %s %q would be cut at the ; or # that follows white space", what, s)
	}
	return strings.ReplaceAll(s, "%", "%%"), nil
}

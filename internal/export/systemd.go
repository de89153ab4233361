package export

import (
	"fmt"
	"strings"
)

// renderSystemd writes one APP-PROC-N.service per instance rather than a
// template APP-PROC@.service: each instance has its own environment file
// (its own PORT), a scale-down leaves no enabled instance behind, and the
// names match what supervisord and the journal show. APP.target Wants=
// every instance and each is PartOf= it, so
// `systemctl start|stop|restart APP.target` acts on the whole app.
func renderSystemd(o *Options, insts []instance) ([]File, error) {
	var files []File
	var units []string
	for _, in := range insts {
		name := instanceName("systemd", in)
		files = append(files, File{Name: name + ".env", Data: renderEnvFile("systemd", in), Mode: 0o600})
		files = append(files, File{Name: name + ".service", Data: systemdService(o, in, name), Mode: 0o644})
		units = append(units, name+".service")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n# %s\n", marker(o.App.Name, "systemd"), markerNote)
	fmt.Fprintf(&b, "[Unit]\nDescription=%s (ferry export)\nWants=%s\n\n", sdEscape(o.App.Name), strings.Join(units, " "))
	b.WriteString("[Install]\nWantedBy=multi-user.target\n")
	files = append(files, File{Name: o.App.Name + ".target", Data: []byte(b.String()), Mode: 0o644})
	return files, nil
}

func systemdService(o *Options, in instance, name string) []byte {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# %s\n# %s", marker(in.app, "systemd"), markerNote)
	w("[Unit]")
	w("Description=%s %s.%d", sdEscape(in.app), in.proc.Name, in.n)
	w("PartOf=%s.target", in.app)
	w("After=network.target")
	w("")
	w("[Service]")
	w("Type=simple")
	if o.User != "" {
		w("User=%s", sdEscape(o.User))
	}
	w("WorkingDirectory=%s", sdEscape(o.Root))
	// The environment, secrets included, stays in a 0600 file: unit files
	// are world-readable and `systemctl show` prints Environment= to anyone.
	w("EnvironmentFile=%s", sdEscape(in.envPath))
	// sh -c so Procfile commands may use shell syntax (see runCommand).
	w("ExecStart=/bin/sh -c %s", sdQuote(runCommand(in.proc.Command)))
	w("Restart=always")
	w("RestartSec=1")
	if execd(in.proc.Command) {
		// mixed: SIGTERM to the app alone, so it can drain; SIGKILL to
		// whatever is left in the cgroup once TimeoutStopSec runs out.
		w("KillMode=mixed")
	} else {
		// The main process is sh running a script, which would die on
		// SIGTERM and leave its children to the SIGKILL: every process of
		// the unit gets the SIGTERM instead, as supervisord's stopasgroup
		// does.
		w("KillMode=control-group")
	}
	w("TimeoutStopSec=%d", seconds(in.proc.StopTimeout))
	w("StandardOutput=journal")
	w("StandardError=journal")
	w("SyslogIdentifier=%s", name)
	w("")
	w("[Install]")
	w("WantedBy=%s.target", in.app)
	return []byte(b.String())
}

// sdEscape doubles % so systemd does not read it as a specifier.
func sdEscape(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// sdQuoter makes s one double-quoted word of an Exec line: systemd
// C-unescapes inside quotes, expands $VAR and %-specifiers, so each of
// those characters is escaped.
var sdQuoter = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`)

func sdQuote(s string) string { return `"` + sdQuoter.Replace(s) + `"` }

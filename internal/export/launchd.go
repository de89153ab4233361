package export

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ferrydeploy/ferry"
)

// renderLaunchd writes a property list per instance, labelled APP.PROC.N,
// for /Library/LaunchDaemons (with --user) or ~/Library/LaunchAgents.
// launchd has no notion of a group of jobs, so there is no group file:
// load them with `launchctl bootstrap system DIR/APP.*.plist`. Like
// supervisord it cannot read an environment file, so the job runs the same
// sh wrapper, and the file belongs to --user when run as root. A command
// that is a script rather than one program leaves sh as the job's process:
// launchd signals it alone on stop and, since AbandonProcessGroup is not
// set, kills the rest of its process group once it has exited.
func renderLaunchd(o *Options, insts []instance) ([]File, error) {
	if strings.Contains(o.App.Name, "--") {
		// The marker is an XML comment, which may not contain "--".
		return nil, ferry.Errorf(ferry.EINVALID, "export: launchd: app name %q may not contain --", o.App.Name)
	}
	var files []File
	for _, in := range insts {
		label := instanceName("launchd", in)
		files = append(files, File{Name: label + ".env", Data: renderEnvFile("launchd", in), Mode: 0o600, Owner: o.User})
		files = append(files, File{Name: label + ".plist", Data: launchdPlist(o, in, label), Mode: 0o644})
	}
	return files, nil
}

func launchdPlist(o *Options, in instance, label string) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
`)
	fmt.Fprintf(&b, "<!-- %s\n     %s -->\n", marker(in.app, "launchd"), markerNote)
	b.WriteString("<plist version=\"1.0\">\n<dict>\n")
	str := func(key, val string) {
		fmt.Fprintf(&b, "\t<key>%s</key>\n\t<string>%s</string>\n", key, xmlText(val))
	}
	integer := func(key string, val int) {
		fmt.Fprintf(&b, "\t<key>%s</key>\n\t<integer>%d</integer>\n", key, val)
	}
	str("Label", label)
	b.WriteString("\t<key>ProgramArguments</key>\n\t<array>\n")
	for _, arg := range []string{"/bin/sh", "-c", wrapperScript(in.envPath, in.proc.Command)} {
		fmt.Fprintf(&b, "\t\t<string>%s</string>\n", xmlText(arg))
	}
	b.WriteString("\t</array>\n")
	str("WorkingDirectory", o.Root)
	if o.User != "" {
		str("UserName", o.User)
	}
	b.WriteString("\t<key>RunAtLoad</key>\n\t<true/>\n\t<key>KeepAlive</key>\n\t<true/>\n")
	// launchd's default is to wait 10 s before a restart; match systemd's 1 s.
	integer("ThrottleInterval", 1)
	integer("ExitTimeOut", seconds(in.proc.StopTimeout))
	log := filepath.Join(o.LogDir, label+".log")
	str("StandardOutPath", log)
	str("StandardErrorPath", log)
	b.WriteString("</dict>\n</plist>\n")
	return b.Bytes()
}

// xmlText escapes character data. Unlike xml.EscapeText it leaves quotes
// alone, so the shell commands stay readable; control characters never get
// here (checkText rejects them).
var xmlText = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace

package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/joho/godotenv"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/runas"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// specs lists the instances release id of app runs, as want scales them.
// Each gets the agent's environment (minus what belongs to the agent's own
// supervisor), the release's .env, the app's config and ferry's variables,
// in that order of precedence, lowest first.
func (r *appRunner) specs(app *ferry.App, want *desired.App, id string, prev []supervise.Status) ([]supervise.Spec, error) {
	rel := r.dir.ReleasePath(id)
	config, err := r.renderEnv(rel, want, id)
	if err != nil {
		return nil, err
	}
	base := baseEnv()
	var specs []supervise.Spec
	for _, p := range app.Processes {
		cred, err := credential(p)
		if err != nil {
			return nil, err
		}
		if (cred != nil || p.Limits != (ferry.Limits{})) && r.a.cfg.Self == "" {
			return nil, fmt.Errorf("process %s: user: and limits: start through ferry's own binary, which this agent was not told (Config.Self)", p.Name)
		}
		n := p.Scale
		if s, ok := want.Scale[p.Name]; ok {
			n = s
		}
		for k := 1; k <= n; k++ {
			port, err := instancePort(p, k, prev)
			if err != nil {
				return nil, err
			}
			env := slices.Clone(base)
			for _, key := range sortedKeys(config) {
				env = append(env, key+"="+config[key])
			}
			if r.a.notify != nil {
				env = append(env, "NOTIFY_SOCKET="+r.a.notify.Path())
			}
			env = append(env,
				"PORT="+strconv.Itoa(port),
				"FERRY_APP="+r.name,
				"FERRY_RELEASE="+releaseName(want, id), // what people call it: the server's vN
				"FERRY_RELEASE_ID="+id,                 // the release's directory under releases/
				"FERRY_PROCESS="+p.Name,
				"FERRY_INSTANCE="+strconv.Itoa(k),
				"FERRY_HOST="+r.a.cfg.Name,
			)
			if want.Group != "" {
				env = append(env, "FERRY_GROUP="+want.Group)
			}
			specs = append(specs, supervise.Spec{
				Process:     p.Name,
				N:           k,
				Command:     p.Command,
				Dir:         rel,
				Env:         env,
				Port:        port,
				StopTimeout: p.StopTimeout,
				Health:      p.Health,
				LogPath:     filepath.Join(r.dir.Path, "logs", fmt.Sprintf("%s.%d.log", p.Name, k)),
				Log:         r.a.cfg.Log,
				RunDir:      filepath.Join(r.dir.Path, "run"),
				Release:     id,
				Backoff:     r.a.cfg.Backoff,
				MinUptime:   r.a.cfg.MinUptime,
				OnChange:    r.instanceChanged,
				WaitReady:   r.a.waitReady(),
				Logger:      r.a.log.With("app", r.name),
				Credential:  cred,
				Prefix:      runas.Prefix(r.a.cfg.Self, cred, p.Limits),
			})
		}
	}
	return specs, nil
}

func (r *appRunner) instanceChanged() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
	r.a.markDirty()
}

// renderEnv merges the release's .env with the app's config and writes the
// result to env/<id>, 0600: it may hold secrets.
func (r *appRunner) renderEnv(rel string, want *desired.App, id string) (map[string]string, error) {
	env := map[string]string{}
	dotenv, err := godotenv.Read(filepath.Join(rel, ".env"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("release %s: .env: %w", id, err)
	}
	for k, v := range dotenv {
		if !ferry.IsEnvName(k) {
			return nil, fmt.Errorf("release %s: .env: %q is not a variable name (letters, digits and _, not starting with a digit)", id, k)
		}
		env[k] = v
	}
	for k, v := range want.Env {
		env[k] = v
	}
	text := renderEnvFile(env)
	dir := filepath.Join(r.dir.Path, "env")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFile(filepath.Join(dir, id), []byte(text), 0o600); err != nil {
		return nil, err
	}
	return env, nil
}

// baseEnv is the agent's environment without what describes the agent's
// own place under its supervisor.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "NOTIFY_SOCKET", k == "PORT", strings.HasPrefix(k, "LISTEN_"), strings.HasPrefix(k, "FERRY_"), k == "INVOCATION_ID", k == "WATCHDOG_USEC", k == "WATCHDOG_PID":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// instancePort is the instance's $PORT: the port it had before when it is
// being adopted, else the process's port plus the instance's offset when
// it declares one, else a free loopback port. (prepare gives instances
// behind the proxy their own ports.)
func instancePort(p ferry.Process, k int, prev []supervise.Status) (int, error) {
	// The port of the very process it adopts (see adoptee): of two
	// recorded for one number, the last.
	if st := adoptee(prev, supervise.Spec{Process: p.Name, N: k}); st != nil && st.Port > 0 {
		return st.Port, nil
	}
	if p.Port > 0 {
		return p.Port + k - 1, nil
	}
	return freePort()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// waitReady is how instances learn that their process sent READY=1.
func (a *Agent) waitReady() func(ctx context.Context, pid int) error {
	if a.notify == nil {
		return nil
	}
	return a.notify.WaitReady
}

// renderEnvFile writes env as KEY='VALUE' lines, sorted: single quotes
// keep a value literally for godotenv, a shell's "." and systemd's
// EnvironmentFile= alike. A value with a single quote or a line break, or
// ending with a backslash, is double-quoted instead, with \\, \", \$, \` and line breaks escaped;
// godotenv then reads it back as itself unless it also starts or ends
// with a double quote or ends with a backslash, which no quoting of
// godotenv's parser can hold (FuzzEnvFile). godotenv.Marshal
// itself would write "0042" as 42.
func renderEnvFile(env map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		b.WriteString(k)
		b.WriteByte('=')
		if !strings.ContainsAny(v, "'\n\r") && !strings.HasSuffix(v, `\`) {
			b.WriteString("'" + v + "'\n")
			continue
		}
		b.WriteByte('"')
		for i := 0; i < len(v); i++ { // bytes, not runes: a value need not be UTF-8
			switch c := v[i]; c {
			case '\\', '"', '$', '`':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteString("\"\n")
	}
	return b.String()
}

// withEnvFile is spec with the environment release id was started with,
// read back from its env file: what an agent that adopts the release from
// state.json (which keeps no config) restarts its instances with. The
// file already merges the release's .env, which renderEnv merges again to
// the same result.
func (r *appRunner) withEnvFile(spec *desired.App, id string) (*desired.App, error) {
	c := *spec
	env, err := godotenv.Read(filepath.Join(r.dir.Path, "env", id))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Env = nil
	case err != nil:
		return nil, fmt.Errorf("release %s: env file: %w", id, err)
	default:
		c.Env = env
	}
	return &c, nil
}

// credential is whom process p runs as: nil for the agent's own user, else
// its user: and that user's groups. Running another user's process needs
// a root agent.
func credential(p ferry.Process) (*syscall.Credential, error) {
	if p.User == "" {
		return nil, nil
	}
	u, err := lookupUser(p.User)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 && int(u.Uid) != os.Geteuid() {
		return nil, ferry.Errorf(ferry.EINVALID, "process %s: user %s: the agent runs as uid %d and can start processes as another user only as root", p.Name, p.User, os.Geteuid())
	}
	return u, nil
}

// lookupUser is name's uid, primary gid and supplementary groups.
func lookupUser(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "user %s: create it on the host (useradd --system %s), or drop user: from ferry.yaml", name, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s: uid %q, gid %q", name, u.Uid, u.Gid)
	}
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				c.Groups = append(c.Groups, uint32(g))
			}
		}
	}
	return c, nil
}

// appOwner is the user the app's processes run as, for the directories
// they must read (their releases) and write (their shared dirs): the first
// process with a user:, nil when none has one.
func appOwner(app *ferry.App) (*syscall.Credential, error) {
	for _, p := range app.Processes {
		if p.User != "" {
			return lookupUser(p.User)
		}
	}
	return nil, nil
}

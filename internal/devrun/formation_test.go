package devrun

import (
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry"
)

func TestFormation(t *testing.T) {
	procs := []ferry.Process{{Name: "web"}, {Name: "worker"}, {Name: "clock"}}
	tests := []struct {
		formation string
		only      []string
		want      string // scales of web, worker, clock
		wantErr   string
	}{
		{formation: "", want: "1 1 1"},
		{formation: "web=2,worker=1", want: "2 1 0"},
		{formation: "all=1, web=3", want: "3 1 1"},
		{formation: "all=0,clock=1", want: "0 0 1"},
		{formation: "", only: []string{"worker"}, want: "0 1 0"},
		{formation: "web=2", only: []string{"web", "clock"}, want: "2 0 1"},
		{formation: "web=x", wantErr: `"web=x" is not name=COUNT`},
		{formation: "web", wantErr: "not name=COUNT"},
		{formation: "web=-1", wantErr: "not name=COUNT"},
		{formation: "web=1,,", wantErr: "not name=COUNT"},
		{formation: "api=1", wantErr: `no process "api"; the processes are web, worker, clock`},
		{formation: "", only: []string{"api"}, wantErr: `no process "api"`},
	}
	for _, tt := range tests {
		f, err := ParseFormation(tt.formation)
		if err == nil && tt.only != nil {
			f, err = f.Only(procs, tt.only)
		}
		var scaled []ferry.Process
		if err == nil {
			scaled, err = f.Apply(procs)
		}
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q %v: err = %v, want %q", tt.formation, tt.only, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %v: %v", tt.formation, tt.only, err)
			continue
		}
		var got []string
		for _, p := range scaled {
			got = append(got, string(rune('0'+p.Scale)))
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("%q %v: scales %v, want %s", tt.formation, tt.only, got, tt.want)
		}
	}
}

func TestShellCommand(t *testing.T) {
	tests := map[string]string{
		"bin/web --port $PORT":       "exec bin/web --port $PORT",
		"trap '' TERM; sleep 100":    "trap '' TERM; sleep 100",
		"sleep 100 & wait":           "sleep 100 & wait",
		"a && b":                     "a && b",
		"FOO=1 bin/web":              "FOO=1 bin/web",
		"cd web && npm start":        "cd web && npm start",
		"bundle exec rails s >> log": "exec bundle exec rails s >> log",
	}
	for in, want := range tests {
		if got := shellCommand(in); got != want {
			t.Errorf("shellCommand(%q) = %q, want %q", in, got, want)
		}
	}
}

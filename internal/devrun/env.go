package devrun

import (
	"fmt"
	"sort"
	"strings"

	"github.com/joho/godotenv"
)

// Environ returns base with the variables of each .env file set over it,
// later files winning, as foreman merges `-e a.env,b.env`.
func Environ(base []string, files ...string) ([]string, error) {
	vars := map[string]string{}
	for _, f := range files {
		m, err := godotenv.Read(f)
		if err != nil {
			return nil, fmt.Errorf("env: %w", err)
		}
		for k, v := range m {
			vars[k] = v
		}
	}
	return setenv(base, vars), nil
}

// Getenv returns the value of key in env, the last one when it repeats.
func Getenv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// setenv returns env with vars replacing any earlier values of their keys,
// so a child never sees two values and has to guess which one wins.
func setenv(env []string, vars map[string]string) []string {
	out := make([]string, 0, len(env)+len(vars))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; !ok {
			out = append(out, kv)
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+vars[k])
	}
	return out
}

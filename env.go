package ferry

import "regexp"

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// IsEnvName says whether s is an environment variable name ferry accepts
// in config, desired states, env files and exports: letters, digits and _,
// not starting with a digit.
func IsEnvName(s string) bool { return envNameRe.MatchString(s) }

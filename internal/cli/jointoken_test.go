package cli

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestTakeJoinToken: the agent takes its join token from --join-file or
// $FERRY_JOIN_TOKEN (and clears the variable, so no app inherits it), and
// refuses two at once.
func TestTakeJoinToken(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	t.Setenv(joinTokenEnv, " ferry_env_x \n")
	jt, err := takeJoinToken("", "", log)
	if err != nil || jt.secret != "ferry_env_x" || jt.file != "" {
		t.Errorf("from the environment: %+v %v", jt, err)
	}
	if v, ok := os.LookupEnv(joinTokenEnv); ok {
		t.Errorf("$%s is still set (%q): the apps would inherit it", joinTokenEnv, v)
	}

	file := filepath.Join(t.TempDir(), "join.token")
	os.WriteFile(file, []byte("ferry_file_y\n"), 0o600)
	if jt, err = takeJoinToken("", file, log); err != nil || jt.secret != "ferry_file_y" || jt.file != file {
		t.Errorf("from a file: %+v %v", jt, err)
	}
	t.Setenv(joinTokenEnv, "ferry_env_x")
	if _, err := takeJoinToken("", file, log); err == nil {
		t.Error("a file and the environment at once: no error")
	}
	os.Remove(file)
	// Removed after the join: the credential counts, no token needed.
	if jt, err = takeJoinToken("", file, log); err != nil || jt.secret != "" {
		t.Errorf("a join file removed after the join: %+v %v", jt, err)
	}
	os.WriteFile(file, []byte("\n"), 0o600)
	if _, err := takeJoinToken("", file, log); err == nil {
		t.Error("an empty join file: no error")
	}
}

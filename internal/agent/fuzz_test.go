package agent

import (
	"maps"
	"strings"
	"testing"

	"github.com/joho/godotenv"

	"github.com/ferrydeploy/ferry"
)

// FuzzEnvFile: whatever a release's .env holds, the env file the agent
// renders from it reads back as the same variables.
func FuzzEnvFile(f *testing.F) {
	for _, s := range []string{
		"A=1\nB=\"two words\"\n# comment\nexport C='single'\nD=\"line\\nbreak\"\n",
		"PIN=0042\n", "KEY=value # trailing\n", "A=${B}\nB=1\n", "A=`x`\n", "A=\"\\$HOME\"\n", "A='$HOME'\n", "A=\"q\\\"uote\"\n", "A=back\\\\slash\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := godotenv.Unmarshal(string(b))
		if err != nil {
			return
		}
		maps.DeleteFunc(m, func(k, v string) bool {
			// godotenv cannot read back a quoted value that starts or ends
			// with its quote character or ends with a backslash in any
			// quoting (renderEnvFile's comment).
			quoted := strings.ContainsAny(v, "'\n\r") || strings.HasSuffix(v, `\`)
			odd := quoted && (strings.HasPrefix(v, `"`) || strings.HasSuffix(v, `"`) || strings.HasSuffix(v, `\`))
			return !ferry.IsEnvName(k) || odd
		})
		text := renderEnvFile(m)
		back, err := godotenv.Unmarshal(text)
		if err != nil {
			t.Fatalf("the rendered env file does not read back: %v\n%s", err, text)
		}
		if !maps.Equal(back, m) {
			t.Fatalf("rendered and read back, the variables changed:\nwas  %q\nnow  %q\nfile %q", m, back, text)
		}
	})
}

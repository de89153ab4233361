package notify

import (
	"maps"
	"os"
	"testing"
)

func TestParseFields(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]string
	}{
		{"ready", "READY=1", map[string]string{"READY": "1"}},
		{"several", "READY=1\nSTATUS=serving on :8080\nMAINPID=42\n", map[string]string{"READY": "1", "STATUS": "serving on :8080", "MAINPID": "42"}},
		{"value with equals", "STATUS=a=b", map[string]string{"STATUS": "a=b"}},
		{"empty value", "STATUS=", map[string]string{"STATUS": ""}},
		{"last wins", "STATUS=a\nSTATUS=b", map[string]string{"STATUS": "b"}},
		{"junk ignored", "hello\n=x\n\nSTOPPING=1", map[string]string{"STOPPING": "1"}},
		{"empty", "", map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseFields(tc.in); !maps.Equal(got, tc.want) {
				t.Errorf("parseFields(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestEventReady(t *testing.T) {
	for in, want := range map[string]bool{"READY=1": true, "READY=0": false, "READY=10": false, "STATUS=READY=1": false} {
		if got := (Event{Fields: parseFields(in)}).Ready(); got != want {
			t.Errorf("Ready() of %q = %v, want %v", in, got, want)
		}
	}
}

func TestProcStart(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	a, err := procStart(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("procStart(self) = %d, %v", a, err)
	}
	if b, _ := procStart(os.Getpid()); b != a {
		t.Errorf("start time changed: %d then %d", a, b)
	}
	if _, err := procStart(1 << 30); err == nil {
		t.Error("procStart of a pid that cannot exist succeeded")
	}
}

package artifact

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// TestFileTapMatchesReadFiles: a tap fed an artifact in small writes finds
// what ReadFiles finds, in every format, and keeps taking writes after it
// is done with them; bytes that are no artifact fail as ReadFiles does.
func TestFileTapMatchesReadFiles(t *testing.T) {
	entries := []Entry{
		{Name: "big", Data: bytes.Repeat([]byte("x"), 1<<20)},
		{Name: ".ferry", Dir: true},
		{Name: ".ferry/meta.json", Data: []byte(`{"app":"web"}`)},
		{Name: "ferry.yaml", Data: []byte("app: web\n")},
		{Name: "tail", Data: bytes.Repeat([]byte("y"), 1<<20)},
	}
	for _, format := range []string{FormatZstd, FormatGzip} {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			if err := Pack(&b, entries, format, time.Unix(1_700_000_000, 0)); err != nil {
				t.Fatal(err)
			}
			tap := NewFileTap(".ferry/meta.json", "ferry.yaml", "Procfile")
			if _, err := io.CopyBuffer(tap, bytes.NewReader(b.Bytes()), make([]byte, 999)); err != nil {
				t.Fatal(err)
			}
			got, err := tap.Done()
			if err != nil {
				t.Fatal(err)
			}
			want, err := ReadFiles(bytes.NewReader(b.Bytes()), ".ferry/meta.json", "ferry.yaml", "Procfile")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || len(want) != 2 || string(got["ferry.yaml"]) != "app: web\n" || string(got[".ferry/meta.json"]) != string(want[".ferry/meta.json"]) {
				t.Errorf("tap found %q, ReadFiles %q", got, want)
			}
		})
	}
	tap := NewFileTap("ferry.yaml")
	tap.Write([]byte("not an archive, but long enough to be read as a tar header? no: 512 bytes are"))
	if _, err := tap.Done(); err == nil {
		t.Error("a tap fed junk found no error")
	}
}

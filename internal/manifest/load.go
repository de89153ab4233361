package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// maxManifest bounds what is read as a manifest or an event.
const maxManifest = 4 << 20

// consulEvent is one element of `consul watch -type event`'s JSON array.
type consulEvent struct {
	ID      string `json:"ID"`
	Name    string `json:"Name"`
	Payload []byte `json:"Payload"` // base64 in JSON
}

// Read returns the manifest's bytes and where they came from. ref is a
// path or URL, or "-" for stdin, which may hold a manifest, a manifest's URL
// (a Serf user event's payload), or a Consul event array whose last
// event's payload is the URL.
func Read(ctx context.Context, ref string, stdin io.Reader, reg fetch.Registry) ([]byte, string, error) {
	if ref != "-" {
		b, err := readURL(ctx, ref, reg)
		return b, ref, err
	}
	in, err := io.ReadAll(io.LimitReader(stdin, maxManifest))
	if err != nil {
		return nil, "", fmt.Errorf("manifest: reading stdin: %w", err)
	}
	trimmed := bytes.TrimSpace(in)
	if len(trimmed) == 0 {
		return nil, "", ferry.Errorf(ferry.EINVALID, "manifest: stdin is empty; pipe a manifest, its URL, or a Consul/Serf event")
	}
	if trimmed[0] == '[' {
		var evs []consulEvent
		if err := json.Unmarshal(trimmed, &evs); err != nil {
			return nil, "", ferry.WrapError(ferry.EINVALID, err, "manifest: stdin looks like a Consul event array but is not one")
		}
		if len(evs) == 0 {
			return nil, "", ferry.Errorf(ferry.EINVALID, "manifest: the Consul event array on stdin is empty")
		}
		ev := evs[len(evs)-1]
		url := strings.TrimSpace(string(ev.Payload))
		if url == "" {
			return nil, "", ferry.Errorf(ferry.EINVALID, "manifest: Consul event %s (%s) has no payload; fire it with the manifest URL", ev.ID, ev.Name)
		}
		b, err := readURL(ctx, url, reg)
		return b, url, err
	}
	if !bytes.ContainsAny(trimmed, "\n") && !bytes.Contains(trimmed, []byte(": ")) {
		url := string(trimmed)
		b, err := readURL(ctx, url, reg)
		return b, url, err
	}
	return in, "stdin", nil
}

func readURL(ctx context.Context, ref string, reg fetch.Registry) ([]byte, error) {
	f, err := os.CreateTemp("", "ferry-manifest-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := reg.Download(ctx, ref, f, fetch.Options{Retries: 2, RetryWait: 500e6}); err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "manifest %s", ref)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(f, maxManifest))
}

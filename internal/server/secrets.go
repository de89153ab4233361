package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// SecretsKeyFile is the server's age identity under Config.Data.
const SecretsKeyFile = "secrets.key"

// EnvSecretsKey, when set, is the age identity itself (AGE-SECRET-KEY-1…),
// for a key kept outside the data directory.
const EnvSecretsKey = "FERRY_SECRETS_KEY"

// sealer encrypts config secrets at rest with the server's age identity,
// and digests them so that two revisions can be compared without showing
// either value.
type sealer struct {
	id     *age.X25519Identity
	digest []byte // HMAC key, derived from the identity
}

// loadSealer reads the identity from $FERRY_SECRETS_KEY, file, or
// DATA/secrets.key, creating the latter (0600) on first start.
func loadSealer(file, data string) (*sealer, error) {
	text := os.Getenv(EnvSecretsKey)
	switch {
	case text != "":
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("server: --secrets-key-file: %w", err)
		}
		text = string(b)
	case data == "":
		return nil, ferry.Errorf(ferry.EINVALID, "server: config secrets need a key: give --secrets-key-file or $%s when there is no data directory", EnvSecretsKey)
	default:
		path := filepath.Join(data, SecretsKeyFile)
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return nil, err
			}
			text = id.String()
			if err := fsutil.WriteFile(path, []byte(text+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("server: %w", err)
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		text = string(b)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(lastLine(text)))
	if err != nil {
		return nil, fmt.Errorf("server: secrets key: %w", err)
	}
	mac := sha256.Sum256([]byte("ferry config digest\x00" + id.String()))
	return &sealer{id: id, digest: mac[:]}, nil
}

// lastLine skips the comments age-keygen writes above the key.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return ""
}

func (k *sealer) seal(value string) (string, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, k.id.Recipient())
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, value); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

func (k *sealer) open(sealed string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return "", fmt.Errorf("sealed secret: %w", err)
	}
	r, err := age.Decrypt(bytes.NewReader(b), k.id)
	if err != nil {
		return "", fmt.Errorf("sealed secret (was the secrets key changed?): %w", err)
	}
	out, err := io.ReadAll(r)
	return string(out), err
}

// sum is a keyed digest of a value: equal values have equal sums, and a
// sum says nothing of its value to someone without the key.
func (k *sealer) sum(value string) string {
	m := hmac.New(sha256.New, k.digest)
	io.WriteString(m, value)
	return hex.EncodeToString(m.Sum(nil))
}

// keySecretsRecipient names the key the state's secrets are sealed for.
const keySecretsRecipient = "meta/secrets-recipient"

// checkSealer makes sure every server sealing into this state holds the
// same key: the first one to start records its recipient, and a server
// with another key refuses to start instead of sealing secrets the others
// cannot open (or failing to open theirs).
func (s *Server) checkSealer(ctx context.Context) error {
	mine := s.sealer.id.Recipient().String()
	kv, err := s.st.Get(ctx, keySecretsRecipient)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		if _, _, err := s.st.CompareAndSwap(ctx, keySecretsRecipient, 0, []byte(mine), 0); err != nil {
			return err
		}
		kv, err = s.st.Get(ctx, keySecretsRecipient)
	}
	if err != nil {
		return err
	}
	if string(kv.Value) != mine {
		return ferry.Errorf(ferry.EINVALID, "server: this server's secrets key (recipient %s) is not the one the state's secrets are sealed with (%s): copy %s from the first server, or give it with --secrets-key-file", mine, kv.Value, SecretsKeyFile)
	}
	return nil
}

package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
)

// The state store's key layout is package repo's; the server keeps its
// own records (tokens, config, the secrets recipient) under these keys
// with repo's generic helpers.
const (
	keyInit       = repo.KeyInit
	prefixTokens  = repo.PrefixTokens
	prefixReports = repo.PrefixReports
	prefixDesired = repo.PrefixDesired
	prefixArts    = repo.PrefixArtifacts
)

// getJSON reads key into v and returns its mod revision; a missing key is
// ENOTFOUND.
func (s *Server) getJSON(ctx context.Context, key string, v any) (int64, error) {
	return repo.GetJSON(ctx, s.st, key, v)
}

// lookup is getJSON that says whether key exists instead of failing.
func (s *Server) lookup(ctx context.Context, key string, v any) (bool, error) {
	return repo.Lookup(ctx, s.st, key, v)
}

func (s *Server) putJSON(ctx context.Context, key string, v any) error {
	return repo.PutJSON(ctx, s.st, key, v)
}

// listJSON decodes every value under prefix, in key order.
func listJSON[T any](ctx context.Context, st state.Store, prefix string) ([]T, error) {
	return repo.ListJSON[T](ctx, st, prefix)
}

// update is repo.Update.
func update[T any](ctx context.Context, st state.Store, key string, fn func(v *T, exists bool) error) (T, error) {
	return repo.Update(ctx, st, key, fn)
}

// errSkip tells update to change nothing.
var errSkip = repo.ErrSkip

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Package state is the control server's state store: a small key-value
// store with revisions, compare-and-swap, prefix listing, watches from a
// revision and leases — the semantics etcd has, so the embedded bbolt store
// (state/bolt) and etcd (state/etcd) are interchangeable behind Store and
// pass the same suite (state/statetest).
package state

import (
	"context"
	"time"
)

// KV is one key's value and the revision that last changed it.
type KV struct {
	Key   string
	Value []byte
	Rev   int64 // mod revision: the store revision of the key's last change
	Lease LeaseID
}

// Swap is one change in CompareAndSwapMany.
type Swap struct {
	Key   string
	Rev   int64 // the mod revision the key must have; 0: it must not exist
	Value []byte
	Lease LeaseID
}

// MaxSwaps bounds one CompareAndSwapMany, below etcd's default limit of
// 128 operations per transaction.
const MaxSwaps = 100

// Event types.
const (
	Put    = "put"
	Delete = "delete"
)

// Event is one change seen by a watch.
type Event struct {
	Type string
	KV   KV // for Delete, Value is nil and Rev is the revision of the delete
}

// LeaseID names a lease; 0 is none.
type LeaseID int64

// Store is the state store. Every method that changes a key advances the
// store's revision by one, and Watch reports changes in revision order.
//
// Errors: Get on a missing key returns an error whose ferry.ErrorCode is
// ferry.ENOTFOUND; a cancelled ctx returns ctx.Err(); anything else is the
// backend's failure, wrapped.
type Store interface {
	// Get returns key's value.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key with prefix in key order, and the store
	// revision the listing reflects.
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Put sets key (attached to lease when it is not 0) and returns the
	// new store revision.
	Put(ctx context.Context, key string, value []byte, lease LeaseID) (int64, error)
	// CompareAndSwap sets key only if its mod revision is rev (0: only if
	// the key does not exist). ok is false, with no error, when it was not.
	CompareAndSwap(ctx context.Context, key string, rev int64, value []byte, lease LeaseID) (newRev int64, ok bool, err error)
	// CompareAndSwapMany applies every swap, or none when a key's mod
	// revision is not its Rev (0: the key must not exist), in one
	// transaction: a crash never leaves some applied. ok is false, with no
	// error, when a compare failed. Every changed key's new mod revision
	// is above the store revision before the call and at most newRev
	// (etcd gives them all one revision, bolt one each). At most MaxSwaps
	// swaps, each of a different key.
	CompareAndSwapMany(ctx context.Context, swaps []Swap) (newRev int64, ok bool, err error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// CompareAndDelete removes key only if its mod revision is rev.
	CompareAndDelete(ctx context.Context, key string, rev int64) (ok bool, err error)
	// Rev is the store's current revision. It is at least 1, also in a new
	// store, so that the revision before any change is never 0 ("now" to
	// Watch).
	Rev(ctx context.Context) (int64, error)
	// Watch sends every change to keys with prefix after revision from
	// (from 0: changes after now), in order, none missed or repeated,
	// until ctx is done; then the channel is closed. A watcher too slow to
	// keep up, or one asking for history the store no longer has, gets its
	// channel closed early with Err set (ErrCompacted) — it should List
	// and watch again from the listing's revision.
	Watch(ctx context.Context, prefix string, from int64) (*Watcher, error)
	// Grant creates a lease that expires ttl after its last KeepAlive;
	// keys attached to it are deleted when it expires or is revoked.
	Grant(ctx context.Context, ttl time.Duration) (LeaseID, error)
	// KeepAlive renews the lease once. An expired or unknown lease returns
	// an error whose ferry.ErrorCode is ferry.ENOTFOUND.
	KeepAlive(ctx context.Context, id LeaseID) error
	// Revoke ends the lease now, deleting its keys.
	Revoke(ctx context.Context, id LeaseID) error
	Close() error
}

// Watcher delivers a watch's events.
type Watcher struct {
	C   <-chan Event
	err func() error
}

// NewWatcher is for Store implementations: c delivers events; err says why
// c was closed (nil when the watch's ctx ended).
func NewWatcher(c <-chan Event, err func() error) *Watcher { return &Watcher{C: c, err: err} }

// Err says why C was closed: nil when the watch's ctx ended.
func (w *Watcher) Err() error {
	if w.err == nil {
		return nil
	}
	return w.err()
}

// ErrCompacted ends a watch that cannot continue without missing events.
var ErrCompacted = errCompacted{}

type errCompacted struct{}

func (errCompacted) Error() string {
	return "state: watch fell behind or asked for compacted history; list and watch again"
}

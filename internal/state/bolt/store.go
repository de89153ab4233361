// Package bolt is the embedded state store: state.Store on one bbolt file,
// the default of `ferry server --data DIR` (DIR/state.db).
//
// Layout of the file, one bucket each:
//
//	meta       rev (current store revision, 1 when new), compact (highest revision
//	           dropped from the event log), lease (last lease ID), version
//	keys       key → mod rev · lease · value
//	events     rev → type · lease · key · value; the last Options.History
//	           changes, for watches that start in the past
//	leases     lease ID → ttl · deadline (unix ns, wall clock, so that a
//	           lease whose time passed while the server was down is expired);
//	           the live deadlines are kept in memory (see memLease)
//	leasekeys  lease ID · key → "", to find a lease's keys without a scan
//
// Every change to a key takes its own revision, so a watcher that resumes
// from the last revision it saw misses nothing and sees nothing twice — also
// when a revoked or expired lease deletes several keys.
//
// Writes are serialised by a mutex that also guards the in-process watchers:
// each committed write is handed to the watchers before the next one starts.
// A watcher's channel is buffered; one that falls Options.WatchBuffer events
// behind is closed with state.ErrCompacted instead of slowing writers down
// (the events already in its buffer stay readable, then the channel ends).
// A watch from a revision older than the last Options.History changes ends
// at once with state.ErrCompacted. Either way the watcher lists and watches
// again from the listing's revision.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
	"go.etcd.io/bbolt"
)

var _ state.Store = (*Store)(nil)

// Options tunes a Store. The zero value is the production default.
type Options struct {
	// History is how many recent changes are kept for watches that start
	// in the past; a watch from before them ends with state.ErrCompacted.
	// Default 10000.
	History int
	// WatchBuffer is how many events a watcher may fall behind the writers
	// before its channel is closed with state.ErrCompacted. Default 1024.
	WatchBuffer int
	// LockTimeout bounds the wait for the file lock another process holds.
	// Default 5s.
	LockTimeout time.Duration
	// Logger receives failures of the background lease expiry, which has no
	// caller to return them to. Default: discarded.
	Logger *slog.Logger
}

const (
	defaultHistory     = 10000
	defaultWatchBuffer = 1024
	defaultLockTimeout = 5 * time.Second
	formatVersion      = 1
)

// Log keys.
const (
	logKeyErr  = "err"
	logKeyPath = "path"
)

var errClosed = errors.New("state/bolt: store closed")

// Store is a state.Store on a bbolt file.
type Store struct {
	db   *bbolt.DB
	path string
	opt  Options
	log  *slog.Logger

	mu       sync.Mutex // serialises writes, watcher registration and delivery
	closed   bool
	watchers map[*watcher]struct{}

	lmu    sync.Mutex // guards leases; never held while taking mu
	leases map[state.LeaseID]*memLease

	nudge chan struct{} // wakes the expiry loop after a Grant
	done  chan struct{} // closed by Close
	wg    sync.WaitGroup
}

// Open opens or creates the store at path, creating its directory.
func Open(path string, opt Options) (*Store, error) {
	if opt.History <= 0 {
		opt.History = defaultHistory
	}
	if opt.WatchBuffer <= 0 {
		opt.WatchBuffer = defaultWatchBuffer
	}
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = defaultLockTimeout
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state/bolt: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opt.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("state/bolt: open %s: %w", path, err)
	}
	if err := db.Update(initBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("state/bolt: open %s: %w", path, err)
	}
	s := &Store{
		db:       db,
		path:     path,
		opt:      opt,
		log:      log,
		watchers: make(map[*watcher]struct{}),
		leases:   make(map[state.LeaseID]*memLease),
		nudge:    make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if err := db.View(s.loadLeases); err != nil {
		db.Close()
		return nil, fmt.Errorf("state/bolt: open %s: %w", path, err)
	}
	s.wg.Add(1)
	go s.expireLoop()
	return s, nil
}

// Close stops the lease expiry, ends every watch (their Err says the store
// closed) and closes the file. Calling it again does nothing.
func (s *Store) Close() error {
	// Renewed deadlines go to the file, so that a restart within a lease's
	// ttl keeps the lease.
	if _, err := s.expire(); err != nil && !errors.Is(err, errClosed) {
		s.log.Error("state/bolt: storing lease deadlines", logKeyPath, s.path, logKeyErr, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for w := range s.watchers {
		s.endWatch(w, errClosed)
	}
	close(s.done)
	s.mu.Unlock()
	s.wg.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("state/bolt: close %s: %w", s.path, err)
	}
	return nil
}

// Get returns key's value.
func (s *Store) Get(ctx context.Context, key string) (state.KV, error) {
	var kv state.KV
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		r, ok := getRecord(tx, key)
		if !ok {
			return ferry.Errorf(ferry.ENOTFOUND, "key %q not found", key)
		}
		kv = r.kv(key)
		return nil
	})
	return kv, err
}

// List returns every key with prefix in key order and the store revision.
func (s *Store) List(ctx context.Context, prefix string) ([]state.KV, int64, error) {
	var (
		kvs []state.KV
		rev int64
	)
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		rev = getInt(tx, metaRev)
		c := tx.Bucket(bucketKeys).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			kvs = append(kvs, decodeRecord(v).kv(string(k)))
		}
		return nil
	})
	return kvs, rev, err
}

// Rev returns the current store revision.
func (s *Store) Rev(ctx context.Context) (int64, error) {
	var rev int64
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		rev = getInt(tx, metaRev)
		return nil
	})
	return rev, err
}

// Put sets key and returns the new store revision.
func (s *Store) Put(ctx context.Context, key string, value []byte, lease state.LeaseID) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	return s.update(ctx, func(t *txn) error { return t.put(key, value, lease) })
}

// CompareAndSwap sets key only if its mod revision is rev (0: only if absent).
func (s *Store) CompareAndSwap(ctx context.Context, key string, rev int64, value []byte, lease state.LeaseID) (int64, bool, error) {
	if err := checkKey(key); err != nil {
		return 0, false, err
	}
	swapped := false
	newRev, err := s.update(ctx, func(t *txn) error {
		r, ok := t.get(key)
		if (ok && r.rev != rev) || (!ok && rev != 0) {
			return nil
		}
		swapped = true
		return t.put(key, value, lease)
	})
	if err != nil || !swapped {
		return 0, false, err
	}
	return newRev, true, nil
}

// CompareAndSwapMany applies every swap in one transaction, or none.
func (s *Store) CompareAndSwapMany(ctx context.Context, swaps []state.Swap) (int64, bool, error) {
	if err := checkSwaps(swaps); err != nil {
		return 0, false, err
	}
	swapped := false
	newRev, err := s.update(ctx, func(t *txn) error {
		for _, sw := range swaps {
			if r, ok := t.get(sw.Key); (ok && r.rev != sw.Rev) || (!ok && sw.Rev != 0) {
				return nil
			}
		}
		for _, sw := range swaps {
			if err := t.put(sw.Key, sw.Value, sw.Lease); err != nil {
				return err
			}
		}
		swapped = true
		return nil
	})
	if err != nil || !swapped {
		return 0, false, err
	}
	return newRev, true, nil
}

func checkSwaps(swaps []state.Swap) error {
	if len(swaps) > state.MaxSwaps {
		return ferry.Errorf(ferry.EINVALID, "%d swaps in one transaction: the limit is %d", len(swaps), state.MaxSwaps)
	}
	seen := make(map[string]bool, len(swaps))
	for _, sw := range swaps {
		if err := checkKey(sw.Key); err != nil {
			return err
		}
		if seen[sw.Key] {
			return ferry.Errorf(ferry.EINVALID, "key %q twice in one transaction", sw.Key)
		}
		seen[sw.Key] = true
	}
	return nil
}

// Delete removes key; a missing key is not an error and changes nothing.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.update(ctx, func(t *txn) error {
		_, err := t.del(key)
		return err
	})
	return err
}

// CompareAndDelete removes key only if its mod revision is rev. As in etcd,
// a missing key compares as mod revision 0 (and deleting it changes nothing).
func (s *Store) CompareAndDelete(ctx context.Context, key string, rev int64) (bool, error) {
	deleted := false
	_, err := s.update(ctx, func(t *txn) error {
		r, ok := t.get(key)
		if !ok {
			deleted = rev == 0
			return nil
		}
		if r.rev != rev {
			return nil
		}
		var err error
		deleted, err = t.del(key)
		return err
	})
	return deleted && err == nil, err
}

func checkKey(key string) error {
	if key == "" {
		return ferry.Errorf(ferry.EINVALID, "empty key")
	}
	if len(key) > bbolt.MaxKeySize {
		return ferry.Errorf(ferry.EINVALID, "key of %d bytes: the limit is %d", len(key), bbolt.MaxKeySize)
	}
	return nil
}

// view runs fn in a read transaction.
func (s *Store) view(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return wrap(s.db.View(fn))
}

// errNoChange rolls back a write transaction that changed nothing, so that
// a failed compare or a no-op delete costs no fsync.
var errNoChange = errors.New("no change")

// update runs fn in a write transaction and, once it has committed, hands
// its events to the watchers. It returns the store revision after fn.
func (s *Store) update(ctx context.Context, fn func(*txn) error) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errClosed
	}
	var t *txn
	err := s.db.Update(func(tx *bbolt.Tx) error {
		t = &txn{tx: tx, rev: getInt(tx, metaRev), store: s}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.events) == 0 && !t.dirty {
			return errNoChange
		}
		return t.commit(s.opt.History)
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return 0, wrap(err)
	}
	s.deliver(t.events)
	return t.rev, nil
}

// wrap leaves ferry errors (ENOTFOUND, EINVALID) as they are and prefixes
// bbolt's.
func wrap(err error) error {
	var fe *ferry.Error
	if err == nil || errors.As(err, &fe) {
		return err
	}
	return fmt.Errorf("state/bolt: %w", err)
}

package bolt

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ferrydeploy/ferry/internal/state"
	"go.etcd.io/bbolt"
)

var (
	bucketMeta      = []byte("meta")
	bucketKeys      = []byte("keys")
	bucketEvents    = []byte("events")
	bucketLeases    = []byte("leases")
	bucketLeaseKeys = []byte("leasekeys")

	metaRev     = []byte("rev")
	metaCompact = []byte("compact")
	metaLease   = []byte("lease")
	metaVersion = []byte("version")
)

func initBuckets(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketKeys, bucketEvents, bucketLeases, bucketLeaseKeys} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	switch v := getInt(tx, metaVersion); v {
	case 0:
		// A new store starts at revision 1, as etcd does, so that the
		// revision before any change (rev-1) is a real one and a watch
		// from it never means "from now".
		if err := putInt(tx, metaRev, 1); err != nil {
			return err
		}
		return putInt(tx, metaVersion, formatVersion)
	case formatVersion:
		return nil
	default:
		return fmt.Errorf("file format version %d, this ferry reads version %d", v, formatVersion)
	}
}

func u64(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

func i64(b []byte) int64 { return int64(binary.BigEndian.Uint64(b)) }

func getInt(tx *bbolt.Tx, name []byte) int64 {
	v := tx.Bucket(bucketMeta).Get(name)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

func putInt(tx *bbolt.Tx, name []byte, n int64) error {
	return tx.Bucket(bucketMeta).Put(name, u64(n))
}

// record is a stored key: mod rev (8) · lease (8) · value.
type record struct {
	rev   int64
	lease state.LeaseID
	value []byte
}

func encodeRecord(r record) []byte {
	b := make([]byte, 16, 16+len(r.value))
	binary.BigEndian.PutUint64(b, uint64(r.rev))
	binary.BigEndian.PutUint64(b[8:], uint64(r.lease))
	return append(b, r.value...)
}

// decodeRecord copies the value out: bbolt's memory is valid only inside
// the transaction.
func decodeRecord(b []byte) record {
	return record{
		rev:   int64(binary.BigEndian.Uint64(b)),
		lease: state.LeaseID(binary.BigEndian.Uint64(b[8:])),
		value: append([]byte{}, b[16:]...),
	}
}

func (r record) kv(key string) state.KV {
	return state.KV{Key: key, Value: r.value, Rev: r.rev, Lease: r.lease}
}

func getRecord(tx *bbolt.Tx, key string) (record, bool) {
	v := tx.Bucket(bucketKeys).Get([]byte(key))
	if v == nil {
		return record{}, false
	}
	return decodeRecord(v), true
}

// An event in the log, keyed by its revision: type (1) · lease (8) · key
// length (uvarint) · key · value.
func encodeEvent(ev state.Event) []byte {
	typ := byte('p')
	if ev.Type == state.Delete {
		typ = 'd'
	}
	b := []byte{typ}
	b = binary.BigEndian.AppendUint64(b, uint64(ev.KV.Lease))
	b = binary.AppendUvarint(b, uint64(len(ev.KV.Key)))
	b = append(b, ev.KV.Key...)
	return append(b, ev.KV.Value...)
}

func decodeEvent(k, b []byte) (state.Event, error) {
	if len(b) < 10 {
		return state.Event{}, fmt.Errorf("event %x: short record", k)
	}
	ev := state.Event{Type: state.Put}
	ev.KV.Rev = i64(k)
	ev.KV.Lease = state.LeaseID(binary.BigEndian.Uint64(b[1:9]))
	n, w := binary.Uvarint(b[9:])
	if w <= 0 || uint64(len(b)-9-w) < n {
		return state.Event{}, fmt.Errorf("event %x: bad key length", k)
	}
	rest := b[9+w:]
	ev.KV.Key = string(rest[:n])
	if b[0] == 'd' {
		ev.Type = state.Delete
	} else {
		ev.KV.Value = append([]byte{}, rest[n:]...)
	}
	return ev, nil
}

// lease is a stored lease: ttl (8) · deadline in unix ns (8).
type lease struct {
	ttl      time.Duration
	deadline time.Time
}

func encodeLease(l lease) []byte {
	return binary.BigEndian.AppendUint64(u64(int64(l.ttl)), uint64(l.deadline.UnixNano()))
}

func decodeLease(b []byte) lease {
	return lease{
		ttl:      time.Duration(binary.BigEndian.Uint64(b)),
		deadline: time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))),
	}
}

// leaseKey is the leasekeys entry tying key to lease id.
func leaseKey(id state.LeaseID, key string) []byte {
	return append(u64(int64(id)), key...)
}

// txn is one write transaction: each change takes the next revision and
// records an event; commit stores the revision and the events.
type txn struct {
	tx     *bbolt.Tx
	rev    int64
	events []state.Event
	dirty  bool // changed something that is not a key (a lease)
	store  *Store
}

func (t *txn) get(key string) (record, bool) { return getRecord(t.tx, key) }

func (t *txn) put(key string, value []byte, id state.LeaseID) error {
	if id != 0 {
		if err := t.store.liveLease(id, time.Now()); err != nil {
			return err
		}
	}
	if old, ok := t.get(key); ok && old.lease != 0 && old.lease != id {
		if err := t.tx.Bucket(bucketLeaseKeys).Delete(leaseKey(old.lease, key)); err != nil {
			return err
		}
	}
	t.rev++
	if err := t.tx.Bucket(bucketKeys).Put([]byte(key), encodeRecord(record{rev: t.rev, lease: id, value: value})); err != nil {
		return err
	}
	if id != 0 {
		if err := t.tx.Bucket(bucketLeaseKeys).Put(leaseKey(id, key), []byte{}); err != nil {
			return err
		}
	}
	t.events = append(t.events, state.Event{Type: state.Put, KV: state.KV{
		Key: key, Value: append([]byte{}, value...), Rev: t.rev, Lease: id,
	}})
	return nil
}

// del removes key and reports whether it was there.
func (t *txn) del(key string) (bool, error) {
	old, ok := t.get(key)
	if !ok {
		return false, nil
	}
	if err := t.tx.Bucket(bucketKeys).Delete([]byte(key)); err != nil {
		return false, err
	}
	if old.lease != 0 {
		if err := t.tx.Bucket(bucketLeaseKeys).Delete(leaseKey(old.lease, key)); err != nil {
			return false, err
		}
	}
	t.rev++
	t.events = append(t.events, state.Event{Type: state.Delete, KV: state.KV{Key: key, Rev: t.rev}})
	return true, nil
}

// revoke deletes lease id and its keys, each key at its own revision.
func (t *txn) revoke(id state.LeaseID) error {
	prefix := u64(int64(id))
	var keys []string
	c := t.tx.Bucket(bucketLeaseKeys).Cursor()
	for k, _ := c.Seek(prefix); len(k) > 8 && string(k[:8]) == string(prefix); k, _ = c.Next() {
		keys = append(keys, string(k[8:]))
	}
	for _, key := range keys {
		if _, err := t.del(key); err != nil {
			return err
		}
	}
	t.dirty = true
	return t.tx.Bucket(bucketLeases).Delete(prefix)
}

// commit stores the new revision and appends the events to the log,
// dropping those older than the last history changes.
func (t *txn) commit(history int) error {
	if len(t.events) == 0 {
		return nil
	}
	if err := putInt(t.tx, metaRev, t.rev); err != nil {
		return err
	}
	log := t.tx.Bucket(bucketEvents)
	for _, ev := range t.events {
		if err := log.Put(u64(ev.KV.Rev), encodeEvent(ev)); err != nil {
			return err
		}
	}
	cutoff := t.rev - int64(history)
	if cutoff <= getInt(t.tx, metaCompact) {
		return nil
	}
	// Deleting through a cursor and then calling Next can skip entries in
	// bbolt; restarting from First after each delete cannot.
	c := log.Cursor()
	for k, _ := c.First(); k != nil && i64(k) <= cutoff; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return putInt(t.tx, metaCompact, cutoff)
}

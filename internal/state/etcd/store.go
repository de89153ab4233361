// Package etcd is the state store for several `ferry server`s: state.Store
// on an etcd cluster (`ferry server --state etcd://HOST:2379,…`), every key
// under one prefix.
//
// The mapping is direct: a key's Rev is its etcd mod revision, the store
// revision is etcd's cluster revision, compare-and-swap is a transaction on
// the mod revision (0 for a missing key, as etcd compares it), watches are
// etcd watches from a revision, and leases are etcd leases, whose TTL etcd
// counts in whole seconds (a shorter one is rounded up). All keys written by
// one transaction share its revision.
//
// etcd's revision counts changes anywhere in the cluster, not just under
// the prefix: it only ever goes up, which is all that ferry relies on.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/state"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var _ state.Store = (*Store)(nil)

// DefaultPrefix is where ferry keeps its keys unless told otherwise.
const DefaultPrefix = "/ferry/"

// Options configure Open.
type Options struct {
	Endpoints []string // host:port or URLs
	Prefix    string   // default DefaultPrefix
	// TLS for the client connection; nil for plain TCP.
	TLS TLSFiles
	// DialTimeout bounds the first connection. Default 5s.
	DialTimeout time.Duration
	// WatchBuffer is how many events a watcher may fall behind before its
	// channel is closed with state.ErrCompacted. Default 1024.
	WatchBuffer int
	// RequestTimeout bounds each request: etcd's client waits for a
	// cluster without quorum instead of failing, and a server must say
	// "unavailable" rather than hang. Default 5s.
	RequestTimeout time.Duration
}

// TLSFiles name the client certificate, key and CA bundle, all PEM.
type TLSFiles struct {
	Cert, Key, CA string
}

const (
	defaultRequestTimeout = 5 * time.Second
	defaultDialTimeout    = 5 * time.Second
	defaultWatchBuffer    = 1024
)

// Store is a state.Store on etcd.
type Store struct {
	c      *clientv3.Client
	prefix string
	opt    Options
}

// Open connects to the cluster and checks that it answers.
func Open(ctx context.Context, opt Options) (*Store, error) {
	if len(opt.Endpoints) == 0 {
		return nil, ferry.Errorf(ferry.EINVALID, "etcd: no endpoints")
	}
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(opt.Prefix, "/") {
		opt.Prefix += "/"
	}
	if opt.DialTimeout <= 0 {
		opt.DialTimeout = defaultDialTimeout
	}
	if opt.WatchBuffer <= 0 {
		opt.WatchBuffer = defaultWatchBuffer
	}
	if opt.RequestTimeout <= 0 {
		opt.RequestTimeout = defaultRequestTimeout
	}
	cfg := clientv3.Config{
		Endpoints:   opt.Endpoints,
		DialTimeout: opt.DialTimeout,
		Logger:      zap.NewNop(),
		// Fail a request instead of hanging when no member answers, so
		// the API can say 503 rather than time out.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if opt.TLS != (TLSFiles{}) {
		tc, err := opt.TLS.config()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("state/etcd: connect %s: %w", strings.Join(opt.Endpoints, ","), err)
	}
	s := &Store{c: c, prefix: opt.Prefix, opt: opt}
	pctx, cancel := context.WithTimeout(ctx, opt.DialTimeout)
	defer cancel()
	if _, err := s.Rev(pctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("state/etcd: %s does not answer: %w", strings.Join(opt.Endpoints, ","), err)
	}
	return s, nil
}

// Client is the underlying client, for what the store does not cover
// (elections).
func (s *Store) Client() *clientv3.Client { return s.c }

// Prefix is the key prefix the store works under.
func (s *Store) Prefix() string { return s.prefix }

// Close closes the client; watches end.
func (s *Store) Close() error {
	err := s.c.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("state/etcd: close: %w", err)
	}
	return nil
}

func (s *Store) key(k string) string { return s.prefix + k }

// op bounds one request by RequestTimeout.
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opt.RequestTimeout)
}

func (s *Store) kv(kv *mvccpb.KeyValue) state.KV {
	return state.KV{
		Key:   strings.TrimPrefix(string(kv.Key), s.prefix),
		Value: kv.Value,
		Rev:   kv.ModRevision,
		Lease: state.LeaseID(kv.Lease),
	}
}

// Get returns key's value.
func (s *Store) Get(ctx context.Context, key string) (state.KV, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	resp, err := s.c.Get(octx, s.key(key))
	if err != nil {
		return state.KV{}, wrap(ctx, err)
	}
	if len(resp.Kvs) == 0 {
		return state.KV{}, ferry.Errorf(ferry.ENOTFOUND, "key %q not found", key)
	}
	return s.kv(resp.Kvs[0]), nil
}

// List returns every key with prefix in key order and the revision the
// listing reflects.
func (s *Store) List(ctx context.Context, prefix string) ([]state.KV, int64, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	resp, err := s.c.Get(octx, s.key(prefix), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, wrap(ctx, err)
	}
	out := make([]state.KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, s.kv(kv))
	}
	return out, resp.Header.Revision, nil
}

// Rev is the cluster's current revision.
func (s *Store) Rev(ctx context.Context) (int64, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	// A read of one (probably missing) key costs little and carries the
	// header with the revision.
	resp, err := s.c.Get(octx, s.key("meta/rev"), clientv3.WithCountOnly())
	if err != nil {
		return 0, wrap(ctx, err)
	}
	return resp.Header.Revision, nil
}

// Put sets key and returns the new revision.
func (s *Store) Put(ctx context.Context, key string, value []byte, lease state.LeaseID) (int64, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	if key == "" {
		return 0, ferry.Errorf(ferry.EINVALID, "empty key")
	}
	resp, err := s.c.Put(octx, s.key(key), string(value), leaseOpt(lease)...)
	if err != nil {
		return 0, wrapLease(ctx, err, lease)
	}
	return resp.Header.Revision, nil
}

// CompareAndSwap sets key only if its mod revision is rev (0: absent).
func (s *Store) CompareAndSwap(ctx context.Context, key string, rev int64, value []byte, lease state.LeaseID) (int64, bool, error) {
	return s.CompareAndSwapMany(ctx, []state.Swap{{Key: key, Rev: rev, Value: value, Lease: lease}})
}

// CompareAndSwapMany applies every swap in one etcd transaction, or none.
func (s *Store) CompareAndSwapMany(ctx context.Context, swaps []state.Swap) (int64, bool, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	if len(swaps) > state.MaxSwaps {
		return 0, false, ferry.Errorf(ferry.EINVALID, "%d swaps in one transaction: the limit is %d", len(swaps), state.MaxSwaps)
	}
	cmps := make([]clientv3.Cmp, 0, len(swaps))
	ops := make([]clientv3.Op, 0, len(swaps))
	seen := make(map[string]bool, len(swaps))
	var lease state.LeaseID
	for _, sw := range swaps {
		if sw.Key == "" {
			return 0, false, ferry.Errorf(ferry.EINVALID, "empty key")
		}
		if seen[sw.Key] {
			return 0, false, ferry.Errorf(ferry.EINVALID, "key %q twice in one transaction", sw.Key)
		}
		seen[sw.Key] = true
		k := s.key(sw.Key)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", sw.Rev))
		ops = append(ops, clientv3.OpPut(k, string(sw.Value), leaseOpt(sw.Lease)...))
		if sw.Lease != 0 {
			lease = sw.Lease
		}
	}
	resp, err := s.c.Txn(octx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, false, wrapLease(ctx, err, lease)
	}
	if !resp.Succeeded {
		return 0, false, nil
	}
	return resp.Header.Revision, true, nil
}

// Delete removes key; a missing key changes nothing.
func (s *Store) Delete(ctx context.Context, key string) error {
	octx, cancel := s.op(ctx)
	defer cancel()
	if _, err := s.c.Delete(octx, s.key(key)); err != nil {
		return wrap(ctx, err)
	}
	return nil
}

// CompareAndDelete removes key only if its mod revision is rev; a missing
// key compares as 0.
func (s *Store) CompareAndDelete(ctx context.Context, key string, rev int64) (bool, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	k := s.key(key)
	resp, err := s.c.Txn(octx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return false, wrap(ctx, err)
	}
	return resp.Succeeded, nil
}

// Grant creates a lease of ttl, rounded up to whole seconds.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (state.LeaseID, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	if ttl <= 0 {
		return 0, ferry.Errorf(ferry.EINVALID, "lease ttl %s: want more than 0", ttl)
	}
	resp, err := s.c.Grant(octx, int64(math.Ceil(ttl.Seconds())))
	if err != nil {
		return 0, wrap(ctx, err)
	}
	return state.LeaseID(resp.ID), nil
}

// KeepAlive renews the lease once.
func (s *Store) KeepAlive(ctx context.Context, id state.LeaseID) error {
	octx, cancel := s.op(ctx)
	defer cancel()
	resp, err := s.c.KeepAliveOnce(octx, clientv3.LeaseID(id))
	if err != nil {
		return wrapLease(ctx, err, id)
	}
	if resp.TTL <= 0 {
		return ferry.Errorf(ferry.ENOTFOUND, "lease %d expired", id)
	}
	return nil
}

// Revoke ends the lease now, deleting its keys.
func (s *Store) Revoke(ctx context.Context, id state.LeaseID) error {
	octx, cancel := s.op(ctx)
	defer cancel()
	if _, err := s.c.Revoke(octx, clientv3.LeaseID(id)); err != nil {
		return wrapLease(ctx, err, id)
	}
	return nil
}

func leaseOpt(id state.LeaseID) []clientv3.OpOption {
	if id == 0 {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithLease(clientv3.LeaseID(id))}
}

// wrapLease is wrap that turns etcd's "lease not found" into ENOTFOUND.
func wrapLease(ctx context.Context, err error, id state.LeaseID) error {
	// rpctypes.Error turns a gRPC status that left the client unconverted
	// into etcd's typed error, so no message is compared.
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || rpctypes.Error(err) == rpctypes.ErrLeaseNotFound {
		return ferry.Errorf(ferry.ENOTFOUND, "lease %d not found or expired", id)
	}
	return wrap(ctx, err)
}

// wrap returns ctx's own error when ctx (the caller's) ended, EUNAVAILABLE
// when no etcd member could answer in time, and anything else prefixed.
func wrap(ctx context.Context, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.Canceled || status.Code(err) == codes.DeadlineExceeded) {
		return ctx.Err()
	}
	switch e := rpctypes.Error(err); {
	case errors.Is(err, context.DeadlineExceeded), e == rpctypes.ErrTimeout, e == rpctypes.ErrLeaderChanged,
		errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrLeaderChanged), remoteDeadline(err):
		return ferry.Errorf(ferry.EUNAVAILABLE, "the state store (etcd) is unavailable: no answer in time (has it lost quorum?): %v", err)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return ferry.Errorf(ferry.EUNAVAILABLE, "the state store (etcd) is unavailable: %v", err)
	}
	if errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) {
		return ferry.Errorf(ferry.EUNAVAILABLE, "the state store (etcd) is unavailable: %v", err)
	}
	return fmt.Errorf("state/etcd: %w", err)
}

// remoteDeadline reports whether err is a context deadline that ended on
// the etcd server (a member without quorum gives up on the request): gRPC
// carries it as status Unknown whose message is the context package's own
// sentinel, which is as close to errors.Is as a wire allows.
func remoteDeadline(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unknown && st.Message() == context.DeadlineExceeded.Error()
}

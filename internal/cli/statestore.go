package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ferrydeploy/ferry/internal/server"
	"github.com/ferrydeploy/ferry/internal/state"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
	"github.com/ferrydeploy/ferry/internal/state/etcd"
	"github.com/ferrydeploy/ferry/internal/store"
	"github.com/ferrydeploy/ferry/internal/store/blob"
	"github.com/ferrydeploy/ferry/internal/store/dir"
)

// etcdFlags are the --etcd-* flags that go with an etcd:// state URL.
type etcdFlags struct {
	prefix, cert, key, ca string
}

func (f *etcdFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.prefix, "etcd-prefix", etcd.DefaultPrefix, "key prefix of ferry's state in etcd")
	fs.StringVar(&f.cert, "etcd-cert", "", "PEM client certificate for etcd (with --etcd-key)")
	fs.StringVar(&f.key, "etcd-key", "", "PEM key of --etcd-cert")
	fs.StringVar(&f.ca, "etcd-ca", "", "PEM CA bundle that signed the etcd members' certificates")
}

// openState opens the state store a URL names: bolt:///path/state.db (one
// file, one server) or etcd://host:2379,host:2379 (any number of servers).
// For etcd it also returns the store as *etcd.Store, for its elections.
func openState(ctx context.Context, raw string, ef etcdFlags) (state.Store, *etcd.Store, error) {
	if p, ok := strings.CutPrefix(raw, "bolt://"); ok {
		if p == "" {
			return nil, nil, usageError{fmt.Errorf("state %q: give the file, as in bolt:///var/lib/ferry-server/state.db", raw)}
		}
		st, err := bolt.Open(p, bolt.Options{})
		if err != nil {
			return nil, nil, fmt.Errorf("%w (is a ferry server still running on it?)", err)
		}
		return st, nil, nil
	}
	if hosts, ok := strings.CutPrefix(raw, "etcd://"); ok {
		scheme := "http://"
		if ef.cert != "" || ef.ca != "" {
			scheme = "https://"
		}
		var eps []string
		for _, h := range strings.Split(hosts, ",") {
			if h = strings.TrimSpace(strings.TrimSuffix(h, "/")); h == "" {
				continue
			}
			if !strings.Contains(h, "://") {
				h = scheme + h
			}
			eps = append(eps, h)
		}
		if len(eps) == 0 {
			return nil, nil, usageError{fmt.Errorf("state %q: name the etcd members, as in etcd://10.0.0.1:2379,10.0.0.2:2379", raw)}
		}
		st, err := etcd.Open(ctx, etcd.Options{Endpoints: eps, Prefix: ef.prefix, TLS: etcd.TLSFiles{Cert: ef.cert, Key: ef.key, CA: ef.ca}})
		if err != nil {
			return nil, nil, err
		}
		return st, st, nil
	}
	return nil, nil, usageError{fmt.Errorf("state %q: use bolt:///path/state.db or etcd://host:2379[,host:2379…]", raw)}
}

// openServerState opens the state store of `ferry server`: --state, or
// without it the bolt file in the server's data directory.
func openServerState(ctx context.Context, raw string, ef etcdFlags, data string) (state.Store, *etcd.Store, error) {
	if raw == "" {
		raw = "bolt://" + filepath.Join(data, server.StateFile)
	}
	return openState(ctx, raw, ef)
}

// openServerStore opens the artifact store of `ferry server`: --store, or
// without it the directory artifacts/ in the server's data directory.
// close lets go of a bucket's connections.
func openServerStore(ctx context.Context, raw, data string) (st store.Store, close func() error, err error) {
	if raw == "" {
		st, err := dir.New(filepath.Join(data, server.ArtifactsDir))
		if err != nil {
			return nil, nil, fmt.Errorf("server: %w", err)
		}
		return st, func() error { return nil }, nil
	}
	bs, err := blob.Open(ctx, raw)
	if err != nil {
		return nil, nil, err
	}
	return bs, bs.Close, nil
}

// campaignerID names this server in leader elections.
func campaignerID() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", h, os.Getpid())
}

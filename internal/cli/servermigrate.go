package cli

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/internal/state"
)

func newServerMigrate(env Env) *cobra.Command {
	var (
		from, to string
		ef       etcdFlags
	)
	cmd := &cobra.Command{
		Use:   "migrate --from bolt:///PATH --to etcd://HOST:2379,…",
		Short: "Copy a server's whole state into another store (bolt to etcd), verified",
		Long: `Copies every key of one state store into another, which must be empty under
its prefix, then reads both back and compares them key by key. Stop the
server that uses --from first (its file is locked while it runs); start the
servers on --to afterwards with the same TLS files and artifact store.

Deploy locks are not copied: they belong to rollouts of the stopped server,
which the new leader resumes and locks again.`,
		Example: `  ferry server migrate --from bolt:///var/lib/ferry-server/state.db \
      --to etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return usageError{fmt.Errorf("--from and --to are both required")}
			}
			ctx := cmd.Context()
			src, _, err := openState(ctx, from, ef)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			defer src.Close()
			dst, _, err := openState(ctx, to, ef)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			defer dst.Close()
			res, err := migrate(ctx, src, dst)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "copied %d keys from %s to %s and verified them", res.copied, from, to)
			if len(res.skipped) > 0 {
				fmt.Fprintf(env.Stdout, "; left out %d deploy locks (%v): their rollouts resume and lock again", len(res.skipped), res.skipped)
			}
			fmt.Fprintln(env.Stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "state to copy: bolt:///path/state.db")
	f.StringVar(&to, "to", "", "state to copy into, empty: etcd://HOST:2379,…")
	ef.add(f)
	return cmd
}

type migrated struct {
	copied  int
	skipped []string // keys on leases: locks
}

// migrate copies src into dst, which must be empty, state.MaxSwaps keys
// per transaction, and checks that dst then holds exactly what src does.
func migrate(ctx context.Context, src, dst state.Store) (migrated, error) {
	var res migrated
	have, _, err := dst.List(ctx, "")
	if err != nil {
		return res, fmt.Errorf("--to: %w", err)
	}
	if len(have) > 0 {
		return res, usageError{fmt.Errorf("--to already holds %d keys (e.g. %q): migrate only into an empty store or prefix", len(have), have[0].Key)}
	}
	kvs, _, err := src.List(ctx, "")
	if err != nil {
		return res, fmt.Errorf("--from: %w", err)
	}
	var want []state.KV
	for _, kv := range kvs {
		if kv.Lease != 0 {
			res.skipped = append(res.skipped, kv.Key)
			continue
		}
		want = append(want, kv)
	}
	for chunk := range slices.Chunk(want, state.MaxSwaps) {
		swaps := make([]state.Swap, len(chunk))
		for i, kv := range chunk {
			swaps[i] = state.Swap{Key: kv.Key, Value: kv.Value}
		}
		_, ok, err := dst.CompareAndSwapMany(ctx, swaps)
		if err != nil {
			return res, fmt.Errorf("--to: %w", err)
		}
		if !ok {
			return res, fmt.Errorf("--to: a key appeared while copying (is a server running on it?)")
		}
		res.copied += len(chunk)
	}
	got, _, err := dst.List(ctx, "")
	if err != nil {
		return res, fmt.Errorf("verify --to: %w", err)
	}
	if len(got) != len(want) {
		return res, fmt.Errorf("verify: --to holds %d keys, --from %d (without locks)", len(got), len(want))
	}
	for i := range got {
		if got[i].Key != want[i].Key || !bytes.Equal(got[i].Value, want[i].Value) {
			return res, fmt.Errorf("verify: key %q differs between --from and --to", want[i].Key)
		}
	}
	return res, nil
}

package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

// This file holds what the snapshot commands share: opening the store at
// --root, output in table or JSON form, and completion of snapshot keys.

// openStore opens the store at --root. Inspection commands pass readOnly:
// they take the store's lock shared and change nothing on disk. Both forms
// fail at once (never block) when another process owns the store; the
// error names it.
func (g *globalOptions) openStore(readOnly bool) (*snapshot.Store, error) {
	opts := []snapshot.Option{snapshot.WithLockTimeout(50 * time.Millisecond)}
	if readOnly {
		opts = append(opts, snapshot.WithReadOnly())
	} else if err := refuseLeakedMounts(g.root); err != nil {
		return nil, err
	}
	return snapshot.Open(g.root, opts...)
}

// withStore runs fn with the store open and closes it after, reporting a
// close error only when fn succeeded.
func (g *globalOptions) withStore(readOnly bool, fn func(s *snapshot.Store) error) (err error) {
	s, err := g.openStore(readOnly)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}()
	return fn(s)
}

// json reports whether --format json was asked for.
func (g *globalOptions) json() bool { return g.format == "json" }

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns; call flush at the end.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(toAny(header)...)
	}
	return t
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			_, _ = io.WriteString(t.tw, "\t")
		}
		_, _ = fmt.Fprint(t.tw, c)
	}
	_, _ = io.WriteString(t.tw, "\n")
}

func (t *table) flush() error { return t.tw.Flush() }

// humanSize formats a byte count the way du -h does (1024-based).
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shortKey shortens digests ("sha256:0123456789ab…") for tables.
func shortKey(k string) string {
	if d, ok := strings.CutPrefix(k, "sha256:"); ok && len(d) > 12 {
		return "sha256:" + d[:12] + "…"
	}
	return k
}

// formatLabels prints labels as sorted k=v pairs.
func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	var s []string
	for k, v := range l {
		s = append(s, k+"="+v)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// orDash prints "-" for an empty cell.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// listInfos returns every snapshot's Info sorted by key.
func listInfos(ctx context.Context, s *snapshot.Store, filters ...string) ([]snapshot.Info, error) {
	var out []snapshot.Info
	err := s.Walk(ctx, func(_ context.Context, i snapshot.Info) error {
		out = append(out, i)
		return nil
	}, filters...)
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, err
}

// completeKeys completes snapshot keys from the store at --root (read-only,
// silently nothing when the store cannot be opened), for the first n
// positional arguments (n < 0: all).
func completeKeys(g *globalOptions, n int, filters ...string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if n >= 0 && len(args) >= n {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var keys []string
		_ = g.withStore(true, func(s *snapshot.Store) error {
			infos, err := listInfos(cmd.Context(), s, filters...)
			for _, i := range infos {
				if strings.HasPrefix(i.Name, toComplete) {
					keys = append(keys, i.Name+"\t"+i.Kind.String())
				}
			}
			return err
		})
		return keys, cobra.ShellCompDirectiveNoFileComp
	}
}

// cmdContext returns the command's context, or Background when it has none.
func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// ErrLeakedMount: a mount under the store root. Opening the store for
// writing clears staging/ (and gc removes orphan dirs): with a mount inside,
// that removal would delete files through the mount.
var ErrLeakedMount = errors.New("leaked mount under the store root")

// refuseLeakedMounts fails when anything is mounted under root.
func refuseLeakedMounts(root string) error {
	abs, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	all, err := overlay.MountsUnder(abs)
	if err != nil {
		return err
	}
	// The FUSE backend's own mounts (snapshot/fuse.go) are not leaks;
	// Check reports the dead ones.
	var mps []string
	for _, mp := range all {
		if !strings.HasPrefix(mp, filepath.Join(abs, "mounts")+"/") {
			mps = append(mps, mp)
		}
	}
	if len(mps) > 0 {
		return fmt.Errorf("open store %s: %w at %s; run 'strata check --repair' to detach it", abs, ErrLeakedMount, strings.Join(mps, ", "))
	}
	return nil
}

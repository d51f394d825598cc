package command

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
	"github.com/stratafs/strata/snapshot/archive"
)

type diffOptions struct {
	g           *globalOptions
	output      string
	stat        bool
	compression string
}

func newDiffCommand(g *globalOptions) *cobra.Command {
	o := &diffOptions{g: g}
	cmd := &cobra.Command{
		Use:   "diff KEY [-o FILE]",
		Short: "Write a snapshot's own changes as an OCI layer tar, or summarize them",
		Long: `Write the changes of KEY's own layer (an active or committed snapshot) as
an OCI layer tar to FILE (default stdout, which must not be a terminal),
and report its digest and diff ID on stderr. With --stat, write no tar but
list the changed paths (A added, M modified, D deleted) and a summary.
Opens the store read-only.`,
		Example: `  strata diff c1 -o layer.tar.gz --compression gzip
  strata diff --stat c1`,
		Args:              exactArgs(1, "KEY"),
		ValidArgsFunction: completeKeys(g, 1),
		RunE:              func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0]) },
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "write the tar to FILE (default stdout)")
	cmd.Flags().BoolVar(&o.stat, "stat", false, "print an added/modified/deleted summary instead of a tar")
	cmd.Flags().StringVar(&o.compression, "compression", "none", "none|gzip|zstd")
	return cmd
}

// diffStatReport is diff --stat's JSON form.
type diffStatReport struct {
	Added    int          `json:"added"`
	Modified int          `json:"modified"`
	Deleted  int          `json:"deleted"`
	Changes  []diffChange `json:"changes"`
}

type diffChange struct {
	Kind string `json:"kind"`
	Path string `json:"path"`
}

func (o *diffOptions) run(cmd *cobra.Command, key string) error {
	var comp archive.Compression
	switch o.compression {
	case "none", "":
		comp = archive.Uncompressed
	case "gzip":
		comp = archive.Gzip
	case "zstd":
		comp = archive.Zstd
	default:
		return usagef("--compression %q: want none, gzip or zstd", o.compression)
	}
	ctx := cmdContext(cmd)
	return o.g.withStore(true, func(s *snapshot.Store) error {
		if o.stat {
			return o.runStat(cmd, s, key)
		}
		w := cmd.OutOrStdout()
		if o.output != "" && o.output != "-" {
			f, err := os.CreateTemp(filepath.Dir(o.output), ".strata-diff-*")
			if err != nil {
				return fmt.Errorf("diff %q: %w", key, err)
			}
			defer func() { _ = os.Remove(f.Name()) }() // gone after the rename
			defer func() { _ = f.Close() }()           // closed below on success
			sum, err := s.Diff(ctx, f, key, archive.WithCompression(comp))
			if err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("diff %q: %w", key, err)
			}
			if err := os.Rename(f.Name(), o.output); err != nil {
				return fmt.Errorf("diff %q: %w", key, err)
			}
			return o.report(cmd, cmd.OutOrStdout(), sum)
		} else if f, ok := w.(*os.File); ok && isTerminal(f) {
			return usagef("diff %q: refusing to write a tar to a terminal; use -o FILE or --stat", key)
		}
		sum, err := s.Diff(ctx, w, key, archive.WithCompression(comp))
		if err != nil {
			return err
		}
		return o.report(cmd, cmd.ErrOrStderr(), sum)
	})
}

// report prints what was written.
func (o *diffOptions) report(cmd *cobra.Command, w io.Writer, sum archive.DiffSummary) error {
	if o.g.json() {
		return writeJSON(w, map[string]any{"digest": sum.Digest, "diff_id": sum.DiffID, "size": sum.Size,
			"compression": sum.Compression.String(), "entries": sum.Entries, "whiteouts": sum.Whiteouts,
			"opaque_dirs": sum.OpaqueDirs})
	}
	_, err := fmt.Fprintf(w, "digest %s\ndiff-id %s\nsize %d (%s), %d entries, %d whiteouts, %d opaque dirs\n",
		sum.Digest, sum.DiffID, sum.Size, sum.Compression, sum.Entries, sum.Whiteouts, sum.OpaqueDirs)
	return err
}

func (o *diffOptions) runStat(cmd *cobra.Command, s *snapshot.Store, key string) error {
	ctx := cmdContext(cmd)
	info, err := s.Stat(ctx, key)
	if err != nil {
		return err
	}
	ls, err := s.Layers(ctx, key)
	if err != nil {
		return err
	}
	if info.Kind == snapshot.KindView || len(ls) == 0 {
		return fmt.Errorf("diff %q: a view has no changes of its own: %w", key, snapshot.ErrFailedPrecondition)
	}
	var lowers []string
	for _, l := range ls[1:] {
		lowers = append(lowers, l.Dir)
	}
	st, err := archive.DiffStat(ctx, ls[0].Dir, lowers, archive.WithDiffFormat(s.LayerFormat()))
	if err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	rep := diffStatReport{Added: st.Added, Modified: st.Modified, Deleted: st.Deleted, Changes: []diffChange{}}
	for _, c := range st.Changes {
		rep.Changes = append(rep.Changes, diffChange{c.Kind.String(), "/" + c.Path})
	}
	if o.g.json() {
		return writeJSON(cmd.OutOrStdout(), rep)
	}
	w := bufio.NewWriter(cmd.OutOrStdout())
	for _, c := range rep.Changes {
		_, _ = fmt.Fprintf(w, "%s %s\n", c.Kind, c.Path)
	}
	_, _ = fmt.Fprintf(w, "%d added, %d modified, %d deleted\n", rep.Added, rep.Modified, rep.Deleted)
	return w.Flush()
}

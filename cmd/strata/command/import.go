package command

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
	"github.com/stratafs/strata/snapshot/archive"
)

type importOptions struct {
	g      *globalOptions
	parent string
}

func newImportCommand(g *globalOptions) *cobra.Command {
	o := &importOptions{g: g}
	cmd := &cobra.Command{
		Use:   "import [--parent KEY] LAYER.tar[.gz|.zst]...",
		Short: "Import OCI layer tars, each on top of the previous, under their chain IDs",
		Long: `Unpack each OCI layer tar (plain, gzip or zstd; whiteouts and opaque dirs
become overlay whiteouts and opaque dirs) as a committed snapshot on top of
the previous one (the first on --parent, or on nothing), named by its OCI
chain ID: chainID(1) = diffID(1), chainID(n) = sha256(chainID(n-1) + " " +
diffID(n)). A layer whose chain ID is already in the store is kept as it is.
Prints the chain IDs, one per line; progress goes to stderr.`,
		Example: `  strata import base.tar.gz app.tar.zst`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("want at least one LAYER.tar; see '%s --help'", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return []string{"tar", "gz", "tgz", "zst"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd, args) },
	}
	cmd.Flags().StringVar(&o.parent, "parent", "", "committed snapshot to import the first layer on")
	_ = cmd.RegisterFlagCompletionFunc("parent", completeKeys(g, -1, "kind==committed"))
	return cmd
}

// importedLayer is one line of import's output.
type importedLayer struct {
	File    string        `json:"file"`
	ChainID string        `json:"chain_id"`
	DiffID  digest.Digest `json:"diff_id"`
	Digest  digest.Digest `json:"digest"`
	Size    int64         `json:"size"`
	Entries int           `json:"entries"`
	Existed bool          `json:"existed,omitempty"`
}

func (o *importOptions) run(cmd *cobra.Command, files []string) error {
	ctx := cmdContext(cmd)
	return o.g.withStore(false, func(s *snapshot.Store) error {
		parent := o.parent
		if parent != "" {
			if _, err := s.Stat(ctx, parent); errors.Is(err, snapshot.ErrNotFound) {
				return fmt.Errorf("parent %q: %w", parent, snapshot.ErrNotFound)
			} else if err != nil {
				return err
			}
		}
		var out []importedLayer
		for i, f := range files {
			l, err := importFile(ctx, cmd, s, f, parent, layerSpec{label: fmt.Sprintf("layer %d/%d %s", i+1, len(files), filepath.Base(f))})
			if err != nil {
				return err
			}
			out = append(out, l)
			parent = l.ChainID
		}
		return printImported(cmd, o.g, out)
	})
}

func printImported(cmd *cobra.Command, g *globalOptions, out []importedLayer) error {
	if g.json() {
		return writeJSON(cmd.OutOrStdout(), out)
	}
	for _, l := range out {
		_, _ = fmt.Fprintln(cmd.OutOrStdout(), l.ChainID)
	}
	return nil
}

// layerSpec is what the caller knows of a layer before reading it.
type layerSpec struct {
	label  string        // progress label
	digest digest.Digest // expected blob digest, "" if unknown
	diffID digest.Digest // expected diff ID, "" if unknown
}

// chainID computes the OCI chain ID of a layer with diffID on parent (a
// chain ID, or "" for a base layer).
func chainID(parent string, diffID digest.Digest) string {
	if parent == "" {
		return diffID.String()
	}
	return digest.FromString(parent + " " + diffID.String()).String()
}

// importFile imports the layer tar at path on parent. The chain ID is
// known only once the tar is read (its diff ID), so the layer is unpacked
// into an active snapshot and committed under its chain ID afterwards.
func importFile(ctx context.Context, cmd *cobra.Command, s *snapshot.Store, path, parent string, spec layerSpec) (_ importedLayer, err error) {
	res := importedLayer{File: path}
	if spec.diffID != "" {
		res.ChainID = chainID(parent, spec.diffID)
		if _, err := s.Stat(ctx, res.ChainID); err == nil {
			res.DiffID, res.Digest, res.Existed = spec.diffID, spec.digest, true
			_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: already present\n", spec.label)
			return res, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("import %q: %w", path, pathCause(err))
	}
	defer func() { _ = f.Close() }() // read only
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("import %q: %w", path, err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := "strata-import-" + hex.EncodeToString(rnd[:])
	if _, err := s.Prepare(ctx, tmp, parent); err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			if rerr := s.Remove(context.WithoutCancel(ctx), tmp); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	ls, err := s.Layers(ctx, tmp)
	if err != nil {
		return res, err
	}
	aopts := []archive.ApplyOption{archive.WithFormat(s.LayerFormat())}
	if spec.digest != "" {
		aopts = append(aopts, archive.WithExpectedDigest(spec.digest))
	}
	if spec.diffID != "" {
		aopts = append(aopts, archive.WithExpectedDiffID(spec.diffID))
	}
	p := newProgress(cmd.ErrOrStderr(), spec.label, fi.Size())
	sum, err := archive.Apply(ctx, ls[0].Dir, p.reader(f), aopts...)
	if err != nil {
		return res, fmt.Errorf("import %q: %w", path, err)
	}
	if err := archive.SyncDir(ls[0].Dir); err != nil {
		return res, fmt.Errorf("import %q: %w", path, err)
	}
	res.DiffID, res.Digest, res.Size, res.Entries = sum.DiffID, sum.Digest, sum.Size, sum.Entries
	res.ChainID = chainID(parent, sum.DiffID)
	labels := map[string]string{LabelDiffID: sum.DiffID.String(), LabelDigest: sum.Digest.String()}
	err = s.Commit(ctx, res.ChainID, tmp, snapshot.WithLabels(labels))
	if errors.Is(err, snapshot.ErrAlreadyExists) {
		// The same layer on the same parent is there already: keep it.
		res.Existed = true
		p.done(" (already present)")
		return res, s.Remove(ctx, tmp)
	}
	if err != nil {
		return res, err
	}
	p.done("")
	return res, nil
}

var _ io.Reader = (*os.File)(nil)

package command

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
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
		var out []importedLayer
		for i, f := range files {
			p := &layerProgress{w: cmd.ErrOrStderr(), label: fmt.Sprintf("layer %d/%d %s", i+1, len(files), filepath.Base(f))}
			l, err := s.ImportLayer(ctx, f, parent, snapshot.LayerSpec{}, p)
			if err != nil {
				return err
			}
			out = append(out, newImportedLayer(f, l))
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

func newImportedLayer(file string, l snapshot.ImportedLayer) importedLayer {
	return importedLayer{File: file, ChainID: l.ChainID, DiffID: l.DiffID, Digest: l.Digest,
		Size: l.Size, Entries: l.Entries, Existed: l.Existed}
}

// layerProgress renders snapshot.LayerProgress: a progress bar on a
// terminal, plain lines otherwise.
type layerProgress struct {
	w     io.Writer
	label string
	p     *progress
}

var _ snapshot.LayerProgress = (*layerProgress)(nil)

func (lp *layerProgress) Start(size int64) { lp.p = newProgress(lp.w, lp.label, size) }
func (lp *layerProgress) Read(n int)       { lp.p.add(n) }
func (lp *layerProgress) Done(l snapshot.ImportedLayer) {
	switch {
	case lp.p == nil: // found before reading
		_, _ = fmt.Fprintf(lp.w, "%s: already present\n", lp.label)
	case l.Existed:
		lp.p.done(" (already present)")
	default:
		lp.p.done("")
	}
}

package command

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type importImageOptions struct{ g *globalOptions }

func newImportImageCommand(g *globalOptions) *cobra.Command {
	o := &importImageOptions{g: g}
	return &cobra.Command{
		Use:   "import-image OCI_LAYOUT_DIR[:TAG]",
		Short: "Import the layers of an image from an OCI layout directory",
		Long: `Read OCI_LAYOUT_DIR/index.json, pick the manifest tagged TAG (annotation
org.opencontainers.image.ref.name) or the only one, and import its layers in
order as with 'strata import', verifying each blob's digest and each
layer's diff ID against the image config. Prints the top chain ID: prepare
containers on it.`,
		Example: `  strata import-image ./alpine-oci:3.20`,
		Args:    exactArgs(1, "OCI_LAYOUT_DIR[:TAG]"),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0]) },
	}
}

// splitLayoutRef splits DIR[:TAG]; a DIR that exists as given wins.
func splitLayoutRef(ref string) (dir, tag string) {
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		return ref, ""
	}
	if i := strings.LastIndex(ref, ":"); i > 0 && !strings.Contains(ref[i+1:], "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

func (o *importImageOptions) run(cmd *cobra.Command, ref string) error {
	dir, tag := splitLayoutRef(ref)
	fail := func(err error) error { return fmt.Errorf("import-image %q: %w", ref, err) }
	// A ref that names no layout fails before the store is opened (and
	// perhaps created).
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return fail(pathCause(err))
	}
	ctx := cmdContext(cmd)
	return o.g.withStore(false, func(s *snapshot.Store) error {
		progress := func(i, n int, l snapshot.Descriptor) snapshot.LayerProgress {
			return &layerProgress{w: cmd.ErrOrStderr(), label: fmt.Sprintf("layer %d/%d %s", i+1, n, shortKey(l.Digest.String()))}
		}
		img, err := s.ImportImage(ctx, dir, tag, snapshot.WithImageProgress(progress))
		if err != nil {
			return fail(err)
		}
		out := make([]importedLayer, len(img.Layers))
		for i, l := range img.Layers {
			out[i] = newImportedLayer(filepath.Join(dir, "blobs", l.Digest.Algorithm().String(), l.Digest.Encoded()), l)
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), map[string]any{"manifest": img.Manifest, "layers": out, "chain_id": img.ChainID})
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), img.ChainID)
		return err
	})
}

package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/internal/ocidemo"
)

func newDebugCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "debug",
		Short:  "Tools for strata's own demo and tests",
		Hidden: true,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "make-demo-image DIR",
		Short: "Write a small three-layer image (a whiteout, an opaque dir) as an OCI layout in DIR",
		Args:  exactArgs(1, "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, err := ocidemo.Write(args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), img)
			}
			for i, c := range img.ChainIDs {
				_, _ = fmt.Fprintf(cmd.OutOrStdout(), "layer %d: blob %s chain %s\n", i+1, img.Layers[i], c)
			}
			_, _ = fmt.Fprintf(cmd.OutOrStdout(), "%s:%s\n", args[0], ocidemo.Tag)
			return nil
		},
	})
	return cmd
}

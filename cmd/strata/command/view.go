package command

import (
	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type viewOptions struct {
	g      *globalOptions
	target string
	labels []string
}

func newViewCommand(g *globalOptions) *cobra.Command {
	o := &viewOptions{g: g}
	cmd := &cobra.Command{
		Use:   "view KEY PARENT",
		Short: "Create a read-only view KEY of the committed PARENT",
		Long: `Create the read-only view KEY of PARENT (a committed snapshot) and print
the mount(8) commands that assemble it on --target (or JSON mounts).`,
		Args:              exactArgs(2, "KEY PARENT"),
		ValidArgsFunction: completeParentAt(g, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreate(cmd, o.g, snapshot.KindView, args, o.target, o.labels)
		},
	}
	cmd.Flags().StringVar(&o.target, "target", "TARGET", "mount point to print in the mount commands")
	cmd.Flags().StringArrayVar(&o.labels, "label", nil, "label k=v for the new view (repeatable)")
	return cmd
}

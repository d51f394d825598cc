package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type rmOptions struct{ g *globalOptions }

func newRmCommand(g *globalOptions) *cobra.Command {
	o := &rmOptions{g: g}
	return &cobra.Command{
		Use:     "rm KEY...",
		Aliases: []string{"remove"},
		Short:   "Remove snapshots",
		Long: `Remove each KEY in order. A committed snapshot with children is refused.
Stops at the first failure; the keys removed before it stay removed.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("want at least one KEY; see '%s --help'", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: completeKeys(g, -1),
		RunE:              func(cmd *cobra.Command, args []string) error { return o.run(cmd, args) },
	}
}

func (o *rmOptions) run(cmd *cobra.Command, keys []string) error {
	return o.g.withStore(false, func(s *snapshot.Store) error {
		var removed []string
		for _, k := range keys {
			if err := s.Remove(cmdContext(cmd), k); err != nil {
				return err
			}
			removed = append(removed, k)
			if !o.g.json() {
				_, _ = fmt.Fprintln(cmd.OutOrStdout(), k)
			}
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), removed)
		}
		return nil
	})
}

package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type commitOptions struct {
	g      *globalOptions
	labels []string
}

func newCommitCommand(g *globalOptions) *cobra.Command {
	o := &commitOptions{g: g}
	cmd := &cobra.Command{
		Use:   "commit NAME KEY",
		Short: "Commit the active snapshot KEY as the read-only NAME",
		Long: `Commit the active snapshot KEY under NAME: KEY goes, NAME becomes a
committed snapshot other snapshots can be prepared on. Unmount KEY first.`,
		Args: exactArgs(2, "NAME KEY"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) != 1 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return completeKeys(g, -1, "kind==active")(cmd, args, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0], args[1]) },
	}
	cmd.Flags().StringArrayVar(&o.labels, "label", nil, "label k=v of the committed snapshot (repeatable)")
	return cmd
}

func (o *commitOptions) run(cmd *cobra.Command, name, key string) error {
	labels, err := parseLabels(o.labels)
	if err != nil {
		return err
	}
	var opts []snapshot.Opt
	if len(labels) > 0 {
		opts = append(opts, snapshot.WithLabels(labels))
	}
	return o.g.withStore(false, func(s *snapshot.Store) error {
		if err := s.Commit(cmdContext(cmd), name, key, opts...); err != nil {
			return err
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), map[string]string{"name": name, "key": key})
		}
		_, err := fmt.Fprintln(cmd.OutOrStdout(), name)
		return err
	})
}

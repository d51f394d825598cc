package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type labelOptions struct{ g *globalOptions }

func newLabelCommand(g *globalOptions) *cobra.Command {
	o := &labelOptions{g: g}
	return &cobra.Command{
		Use:   "label KEY k=v...",
		Short: "Set labels of a snapshot (k= removes k)",
		Long: `Set the labels k=v of KEY; "k=" removes the label k. Other labels stay.
Prints the labels the snapshot has afterwards.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("want KEY and at least one k=v; see '%s --help'", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: completeKeys(g, 1),
		RunE:              func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0], args[1:]) },
	}
}

func (o *labelOptions) run(cmd *cobra.Command, key string, args []string) error {
	labels, err := parseLabels(args)
	if err != nil {
		return err
	}
	info := snapshot.Info{Name: key, Labels: map[string]string{}}
	var paths []string
	for k, v := range labels {
		paths = append(paths, "labels."+k)
		if v != "" {
			info.Labels[k] = v
		}
	}
	return o.g.withStore(false, func(s *snapshot.Store) error {
		out, err := s.Update(cmdContext(cmd), info, paths...)
		if err != nil {
			return err
		}
		if o.g.json() {
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			return writeJSON(cmd.OutOrStdout(), out.Labels)
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), formatLabels(out.Labels))
		return err
	})
}

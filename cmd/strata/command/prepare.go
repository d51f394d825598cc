package command

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type prepareOptions struct {
	g      *globalOptions
	target string
	labels []string
}

func newPrepareCommand(g *globalOptions) *cobra.Command {
	o := &prepareOptions{g: g}
	cmd := &cobra.Command{
		Use:   "prepare KEY [PARENT]",
		Short: "Create an active (writable) snapshot KEY on the committed PARENT",
		Long: `Create the active snapshot KEY on PARENT (a committed snapshot; none for
an empty one) and print the mount(8) commands that assemble it on
--target (or JSON mounts). Mount it with 'strata mount KEY TARGET'.`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeParentAt(g, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreate(cmd, o.g, snapshot.KindActive, args, o.target, o.labels)
		},
	}
	cmd.Flags().StringVar(&o.target, "target", "TARGET", "mount point to print in the mount commands")
	cmd.Flags().StringArrayVar(&o.labels, "label", nil, "label k=v for the new snapshot (repeatable)")
	return cmd
}

// completeParentAt completes committed snapshots for the argument at
// index i only.
func completeParentAt(g *globalOptions, i int) cobra.CompletionFunc {
	keys := completeKeys(g, -1, "kind==committed")
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) != i {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return keys(cmd, args, toComplete)
	}
}

// parseLabels parses k=v arguments; "k=" (empty value) is kept as "" for
// the caller to read as removal.
func parseLabels(args []string) (map[string]string, error) {
	m := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("label %q: want KEY=VALUE (KEY= removes)", a)
		}
		m[k] = v
	}
	return m, nil
}

// runCreate is prepare and view.
func runCreate(cmd *cobra.Command, g *globalOptions, kind snapshot.Kind, args []string, target string, labelArgs []string) error {
	key, parent := args[0], ""
	if len(args) == 2 {
		parent = args[1]
	}
	labels, err := parseLabels(labelArgs)
	if err != nil {
		return err
	}
	var opts []snapshot.Opt
	if len(labels) > 0 {
		opts = append(opts, snapshot.WithLabels(labels))
	}
	return g.withStore(false, func(s *snapshot.Store) error {
		create := s.Prepare
		if kind == snapshot.KindView {
			create = s.View
		}
		ms, err := create(cmdContext(cmd), key, parent, opts...)
		if err != nil {
			return err
		}
		if g.json() {
			return writeJSON(cmd.OutOrStdout(), toMountJSON(ms))
		}
		for _, m := range ms {
			_, _ = fmt.Fprintln(cmd.OutOrStdout(), mountCommandLine(m, target))
		}
		return nil
	})
}

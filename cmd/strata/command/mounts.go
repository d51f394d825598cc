package command

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type mountsOptions struct{ g *globalOptions }

func newMountsCommand(g *globalOptions) *cobra.Command {
	o := &mountsOptions{g: g}
	return &cobra.Command{
		Use:   "mounts KEY [TARGET]",
		Short: "Print the mount(8) commands that assemble a snapshot on TARGET",
		Long: `Print the exact mount(8) command lines a user could run to assemble KEY on
TARGET (default: the word TARGET), or the mounts as JSON. Opens the store
read-only.`,
		Example:           `  strata mounts c1 /mnt/c1 | sh`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKeys(g, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := "TARGET"
			if len(args) == 2 {
				target = args[1]
			}
			return o.run(cmd, args[0], target)
		},
	}
}

func (o *mountsOptions) run(cmd *cobra.Command, key, target string) error {
	return o.g.withStore(true, func(s *snapshot.Store) error {
		ms, err := s.Mounts(cmdContext(cmd), key)
		if err != nil {
			return err
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), toMountJSON(ms))
		}
		for _, m := range ms {
			_, _ = fmt.Fprintln(cmd.OutOrStdout(), mountCommandLine(m, target))
		}
		return nil
	})
}

// mountCommandLine is the mount(8) command that performs m on target.
func mountCommandLine(m snapshot.Mount, target string) string {
	opts := shellQuote(strings.Join(m.Options, ","))
	if m.Type == "bind" {
		return fmt.Sprintf("mount -o %s %s %s", opts, shellQuote(m.Source), shellQuote(target))
	}
	return fmt.Sprintf("mount -t %s -o %s %s %s", m.Type, opts, shellQuote(m.Source), shellQuote(target))
}

// shellQuote quotes s for sh when it holds anything but safe characters.
func shellQuote(s string) string {
	safe := true
	for _, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && !strings.ContainsRune("-_./:=,+@%", r) {
			safe = false
			break
		}
	}
	if safe && s != "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

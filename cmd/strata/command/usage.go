package command

import (
	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type usageOptions struct{ g *globalOptions }

func newUsageCommand(g *globalOptions) *cobra.Command {
	o := &usageOptions{g: g}
	return &cobra.Command{
		Use:   "usage [KEY]",
		Short: "Disk usage of one snapshot's own layer, or of every snapshot with a total",
		Long: `Print the disk usage (allocated bytes, as du counts them, and inodes) of
KEY's own layer, or of every snapshot and their total. Committed snapshots
report what was measured at commit; active ones are measured now. Opens the
store read-only.`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeKeys(g, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := ""
			if len(args) == 1 {
				key = args[0]
			}
			return o.run(cmd, key)
		},
	}
}

// usageEntry is one row of usage.
type usageEntry struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	Inodes int64  `json:"inodes"`
}

func (o *usageOptions) run(cmd *cobra.Command, key string) error {
	ctx := cmdContext(cmd)
	return o.g.withStore(true, func(s *snapshot.Store) error {
		keys := []string{key}
		if key == "" {
			infos, err := listInfos(ctx, s)
			if err != nil {
				return err
			}
			keys = keys[:0]
			for _, i := range infos {
				keys = append(keys, i.Name)
			}
		}
		var rows []usageEntry
		var total snapshot.Usage
		for _, k := range keys {
			u, err := s.Usage(ctx, k)
			if err != nil {
				return err
			}
			total.Add(u)
			rows = append(rows, usageEntry{k, u.Size, u.Inodes})
		}
		if o.g.json() {
			if key != "" {
				return writeJSON(cmd.OutOrStdout(), rows[0])
			}
			if rows == nil {
				rows = []usageEntry{}
			}
			return writeJSON(cmd.OutOrStdout(), rows)
		}
		t := newTable(cmd.OutOrStdout(), "KEY", "SIZE", "INODES")
		for _, r := range rows {
			t.row(r.Key, humanSize(r.Size), r.Inodes)
		}
		if key == "" {
			t.row("total", humanSize(total.Size), total.Inodes)
		}
		return t.flush()
	})
}

package command

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type lsOptions struct {
	g       *globalOptions
	filters []string
}

func newLsCommand(g *globalOptions) *cobra.Command {
	o := &lsOptions{g: g}
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List snapshots: key, kind, parent, size, inodes, created, labels",
		Long: `List the snapshots of the store at --root. Sizes are the snapshot's own
layer (allocated blocks, hard links once): measured at commit for committed
snapshots, now for active ones. Opens the store read-only.`,
		Example: `  strata ls
  strata ls --filter kind==committed --format json`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd) },
	}
	cmd.Flags().StringArrayVar(&o.filters, "filter", nil, "containerd filter over kind, name, parent, labels.KEY (repeatable: any matches)")
	return cmd
}

// lsEntry is one row of ls (and the JSON form).
type lsEntry struct {
	Key     string            `json:"key"`
	Kind    string            `json:"kind"`
	Parent  string            `json:"parent,omitempty"`
	Size    int64             `json:"size"`
	Inodes  int64             `json:"inodes"`
	Created time.Time         `json:"created"`
	Updated time.Time         `json:"updated"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func (o *lsOptions) run(cmd *cobra.Command) error {
	ctx := cmdContext(cmd)
	return o.g.withStore(true, func(s *snapshot.Store) error {
		infos, err := listInfos(ctx, s, o.filters...)
		if err != nil {
			return err
		}
		entries := make([]lsEntry, 0, len(infos))
		for _, i := range infos {
			u, err := s.Usage(ctx, i.Name)
			if err != nil {
				return err
			}
			entries = append(entries, lsEntry{Key: i.Name, Kind: i.Kind.String(), Parent: i.Parent,
				Size: u.Size, Inodes: u.Inodes, Created: i.Created, Updated: i.Updated, Labels: i.Labels})
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), entries)
		}
		t := newTable(cmd.OutOrStdout(), "KEY", "KIND", "PARENT", "SIZE", "INODES", "CREATED", "LABELS")
		for _, e := range entries {
			t.row(e.Key, e.Kind, orDash(e.Parent), humanSize(e.Size), e.Inodes,
				e.Created.Local().Format(time.DateTime), formatLabels(e.Labels))
		}
		return t.flush()
	})
}

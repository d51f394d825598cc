package command

import (
	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

// Labels import writes on each layer it commits.
const (
	LabelDiffID = snapshot.LabelDiffID
	LabelDigest = snapshot.LabelDigest
)

type layersOptions struct{ g *globalOptions }

func newLayersCommand(g *globalOptions) *cobra.Command {
	o := &layersOptions{g: g}
	return &cobra.Command{
		Use:   "layers KEY",
		Short: "List the layers that make up a snapshot, top first",
		Long: `List KEY's own layer (none for a view) and its ancestors, top first, with
each layer's diff ID and digest labels (set by import), size and number of
entries. Opens the store read-only.`,
		Args:              exactArgs(1, "KEY"),
		ValidArgsFunction: completeKeys(g, 1),
		RunE:              func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0]) },
	}
}

// layerEntry is one row of layers.
type layerEntry struct {
	Index   int    `json:"index"`
	Key     string `json:"key"`
	Kind    string `json:"kind"`
	DiffID  string `json:"diff_id,omitempty"`
	Digest  string `json:"digest,omitempty"`
	Size    int64  `json:"size"`
	Inodes  int64  `json:"inodes"`
	Entries int    `json:"entries"`
	Dir     string `json:"dir"`
}

func (o *layersOptions) run(cmd *cobra.Command, key string) error {
	return o.g.withStore(true, func(s *snapshot.Store) error {
		ls, err := s.Layers(cmdContext(cmd), key)
		if err != nil {
			return err
		}
		f := s.LayerFormat()
		rows := []layerEntry{}
		for i, l := range ls {
			n := 0
			if err := f.WalkLayer(l.Dir, "", func(e overlayEntry) error { n++; return nil }); err != nil {
				return err
			}
			rows = append(rows, layerEntry{Index: i, Key: l.Key, Kind: l.Kind.String(), DiffID: l.Labels[LabelDiffID],
				Digest: l.Labels[LabelDigest], Size: l.Usage.Size, Inodes: l.Usage.Inodes, Entries: n, Dir: l.Dir})
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), rows)
		}
		t := newTable(cmd.OutOrStdout(), "#", "KEY", "KIND", "DIFF ID", "SIZE", "ENTRIES")
		for _, r := range rows {
			t.row(r.Index, shortKey(r.Key), r.Kind, orDash(shortKey(r.DiffID)), humanSize(r.Size), r.Entries)
		}
		return t.flush()
	})
}

package command

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

// overlayEntry is a shorter name for the entries WalkLayer reports.
type overlayEntry = overlay.LayerEntry

type filesOptions struct {
	g     *globalOptions
	layer int
}

func newFilesCommand(g *globalOptions) *cobra.Command {
	o := &filesOptions{g: g}
	cmd := &cobra.Command{
		Use:   "files KEY [PATH]",
		Short: "List the entries of one layer of a snapshot, whiteouts and opaque dirs marked",
		Long: `List the entries that KEY's own layer (or, with --layer N, the N-th layer
of 'strata layers KEY') holds at and below PATH: only what that layer
itself stores, not the union. Whiteouts (deletions of lower entries),
opaque dirs (which hide lower contents), redirects and metacopy files are
marked. Opens the store read-only.`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKeys(g, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			return o.run(cmd, args[0], p)
		},
	}
	cmd.Flags().IntVar(&o.layer, "layer", 0, "which layer of the chain, 0 = top (see strata layers)")
	return cmd
}

// fileEntry is one row of files.
type fileEntry struct {
	Path     string `json:"path"`
	Kind     string `json:"kind"`
	Mode     string `json:"mode"`
	Size     int64  `json:"size"`
	Target   string `json:"target,omitempty"`
	Redirect string `json:"redirect,omitempty"`
	Metacopy bool   `json:"metacopy,omitempty"`
}

func (o *filesOptions) run(cmd *cobra.Command, key, p string) error {
	return o.g.withStore(true, func(s *snapshot.Store) error {
		ls, err := s.Layers(cmdContext(cmd), key)
		if err != nil {
			return err
		}
		if o.layer < 0 || o.layer >= len(ls) {
			return usagef("files %q: --layer %d: the snapshot has %d layer(s)", key, o.layer, len(ls))
		}
		rows := []fileEntry{}
		err = s.LayerFormat().WalkLayer(ls[o.layer].Dir, p, func(e overlay.LayerEntry) error {
			rows = append(rows, fileEntry{Path: e.Path, Kind: e.Kind(), Mode: e.Mode.Perm().String(), Size: e.Size,
				Target: e.Target, Redirect: e.Redirect, Metacopy: e.Metacopy})
			return nil
		})
		if err != nil {
			return fmt.Errorf("files %q %q: %w", key, p, pathCause(err))
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), rows)
		}
		t := newTable(cmd.OutOrStdout(), "KIND", "MODE", "SIZE", "PATH")
		for _, r := range rows {
			name := r.Path
			var notes []string
			if r.Target != "" {
				name += " -> " + r.Target
			}
			if r.Redirect != "" {
				notes = append(notes, "redirect="+r.Redirect)
			}
			if r.Metacopy {
				notes = append(notes, "metacopy")
			}
			if len(notes) > 0 {
				name += "  [" + strings.Join(notes, ",") + "]"
			}
			size := humanSize(r.Size)
			if r.Kind != "file" {
				size = "-"
			}
			t.row(r.Kind, r.Mode, size, name)
		}
		return t.flush()
	})
}

var _ = fs.ModeDir

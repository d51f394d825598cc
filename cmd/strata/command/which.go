package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

type whichOptions struct{ g *globalOptions }

func newWhichCommand(g *globalOptions) *cobra.Command {
	o := &whichOptions{g: g}
	return &cobra.Command{
		Use:   "which KEY PATH",
		Short: "Explain which layer serves PATH in a snapshot and which layers it hides",
		Long: `Explain the union lookup of PATH in KEY, layer by layer, top first, as
kernel overlayfs resolves it: the topmost entry serves, a whiteout deletes
the path from the layers below, a dir merges with the dirs below it until
an opaque dir ends the merge, and whatever lies below is hidden. A PATH
the union does not show is reported, then exit status 3. Opens the store
read-only; nothing is mounted. The verdict is overlay.Stack.Lookup's (which
follows redirects and metacopy); the per-layer roles come from a plain walk.`,
		Args:              exactArgs(2, "KEY PATH"),
		ValidArgsFunction: completeKeys(g, 1),
		RunE:              func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0], args[1]) },
	}
}

// whichStep is one layer in which's JSON form.
type whichStep struct {
	Layer int    `json:"layer"`
	Key   string `json:"key"`
	Entry string `json:"entry,omitempty"`
	Role  string `json:"role"`
	Why   string `json:"why,omitempty"`
}

// whichReport is which's JSON form.
type whichReport struct {
	Path   string      `json:"path"`
	Found  bool        `json:"found"`
	Served int         `json:"served_by"`
	Data   int         `json:"data_from"`
	Why    string      `json:"why,omitempty"`
	Layers []whichStep `json:"layers"`
}

func (o *whichOptions) run(cmd *cobra.Command, key, p string) error {
	return o.g.withStore(true, func(s *snapshot.Store) error {
		ls, err := s.Layers(cmdContext(cmd), key)
		if err != nil {
			return err
		}
		dirs := make([]string, len(ls))
		for i, l := range ls {
			dirs[i] = l.Dir
		}
		var sopts []overlay.StackOption
		if s.LayerFormat().UserXattr {
			sopts = append(sopts, overlay.WithUserXattr())
		}
		st, err := overlay.NewStack(dirs, sopts...)
		if err != nil {
			return fmt.Errorf("which %q: %w", key, err)
		}
		res, err := st.Explain(p)
		if err != nil {
			return fmt.Errorf("which %q %q: %w", key, p, err)
		}
		rep := whichReport{Path: res.Path, Found: res.Found, Served: res.Served, Data: res.DataLayer, Why: res.Why, Layers: []whichStep{}}
		for _, st := range res.Steps {
			ws := whichStep{Layer: st.Layer, Key: ls[st.Layer].Key, Role: string(st.Role), Why: st.Why}
			if st.Entry != nil {
				ws.Entry = st.Entry.Kind()
			}
			rep.Layers = append(rep.Layers, ws)
		}
		w := cmd.OutOrStdout()
		if o.g.json() {
			if err := writeJSON(w, rep); err != nil {
				return err
			}
		} else {
			if res.Found {
				_, _ = fmt.Fprintf(w, "%s: served by layer %d (%s)\n", res.Path, res.Served, ls[res.Served].Key)
				if res.DataLayer != res.Served {
					_, _ = fmt.Fprintf(w, "  metacopy: its data comes from layer %d (%s)\n", res.DataLayer, ls[res.DataLayer].Key)
				}
			} else {
				_, _ = fmt.Fprintf(w, "%s: not in the union: %s\n", res.Path, res.Why)
			}
			t := newTable(w, "LAYER", "KEY", "ENTRY", "ROLE")
			for _, st := range rep.Layers {
				role := st.Role
				if st.Why != "" {
					role += ": " + st.Why
				}
				t.row(st.Layer, shortKey(st.Key), orDash(st.Entry), role)
			}
			if err := t.flush(); err != nil {
				return err
			}
		}
		if !res.Found {
			return fmt.Errorf("which %q %q: %w", key, res.Path, snapshot.ErrNotFound)
		}
		return nil
	})
}

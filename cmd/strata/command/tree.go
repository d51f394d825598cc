package command

import (
	"bufio"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type treeOptions struct{ g *globalOptions }

func newTreeCommand(g *globalOptions) *cobra.Command {
	o := &treeOptions{g: g}
	return &cobra.Command{
		Use:   "tree",
		Short: "Show the snapshots as a forest of parents and children, with sizes",
		Long: `Show every snapshot under its parent, with its kind and the size of its
own layer. Opens the store read-only.`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd) },
	}
}

// treeNode is one snapshot in the forest (and the JSON form).
type treeNode struct {
	Key      string      `json:"key"`
	Kind     string      `json:"kind"`
	Size     int64       `json:"size"`
	Inodes   int64       `json:"inodes"`
	Children []*treeNode `json:"children,omitempty"`
}

func (o *treeOptions) run(cmd *cobra.Command) error {
	ctx := cmdContext(cmd)
	return o.g.withStore(true, func(s *snapshot.Store) error {
		infos, err := listInfos(ctx, s)
		if err != nil {
			return err
		}
		nodes := map[string]*treeNode{}
		for _, i := range infos {
			u, err := s.Usage(ctx, i.Name)
			if err != nil {
				return err
			}
			nodes[i.Name] = &treeNode{Key: i.Name, Kind: i.Kind.String(), Size: u.Size, Inodes: u.Inodes}
		}
		roots := []*treeNode{}
		for _, i := range infos { // sorted by key, so children are too
			n := nodes[i.Name]
			if p, ok := nodes[i.Parent]; ok && i.Parent != "" {
				p.Children = append(p.Children, n)
			} else {
				roots = append(roots, n)
			}
		}
		sort.Slice(roots, func(a, b int) bool { return roots[a].Key < roots[b].Key })
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), roots)
		}
		w := bufio.NewWriter(cmd.OutOrStdout()) // one write, not one per line
		for _, r := range roots {
			printTree(w, r, "", "")
		}
		return w.Flush()
	})
}

// printTree prints n and its subtree; first prefixes n's line, rest the
// lines below it.
func printTree(w io.Writer, n *treeNode, first, rest string) {
	_, _ = fmt.Fprintf(w, "%s%s  %s  %s\n", first, n.Key, n.Kind, humanSize(n.Size))
	for i, c := range n.Children {
		if i == len(n.Children)-1 {
			printTree(w, c, rest+"└── ", rest+"    ")
		} else {
			printTree(w, c, rest+"├── ", rest+"│   ")
		}
	}
}

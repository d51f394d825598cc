package command

import (
	"strings"
	"testing"
)

func TestTree(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	ok(t, root, "prepare", "c2", img.ChainIDs[0].String())
	ok(t, root, "prepare", "scratch")

	out := lines(ok(t, root, "tree"))
	equal(t, 6, len(out), out)
	// Roots and siblings sorted by key.
	equal(t, "scratch  active  4.0 KiB", out[0])
	if !strings.HasPrefix(out[1], img.ChainIDs[0].String()+"  committed  ") {
		t.Fatalf("second root: %q", out[1])
	}
	contains(t, out[2], "├── c2  active")
	contains(t, out[3], "└── "+img.ChainIDs[1].String()+"  committed  ")
	contains(t, out[4], "    └── "+img.ChainIDs[2].String())
	contains(t, out[5], "        └── c1  active")

	var forest []*treeNode
	decode(t, ok(t, root, "tree", "--format", "json"), &forest)
	equal(t, 2, len(forest))
	equal(t, "c1", forest[1].Children[1].Children[0].Children[0].Key)
}

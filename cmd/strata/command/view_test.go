package command

import (
	"testing"
)

func TestView(t *testing.T) {
	root, img := demoStore(t)
	var ms []mountJSON
	decode(t, ok(t, root, "view", "--format", "json", "v1", img.ChainIDs[2].String()), &ms)
	equal(t, "overlay", ms[0].Type)
	equal(t, "ro", ms[0].Options[0])
	var ls []lsEntry
	decode(t, ok(t, root, "ls", "--format", "json", "--filter", "name==v1"), &ls)
	equal(t, "view", ls[0].Kind)
	// A view has no layer of its own: layers lists its parent's chain.
	var layers []layerEntry
	decode(t, ok(t, root, "layers", "--format", "json", "v1"), &layers)
	equal(t, 3, len(layers))
	requireFails(t, runIn(t, root, "view", "v2"), ExitUsage, "strata: view: want 2 argument(s) (KEY PARENT), got 1; see 'strata view --help'")
}

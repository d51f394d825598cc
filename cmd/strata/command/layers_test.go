package command

import (
	"testing"
)

func TestLayers(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	var rows []layerEntry
	decode(t, ok(t, root, "layers", "--format", "json", "c1"), &rows)
	equal(t, 4, len(rows))
	equal(t, "c1", rows[0].Key)
	equal(t, "active", rows[0].Kind)
	for i := 1; i < 4; i++ { // top first
		equal(t, img.ChainIDs[3-i].String(), rows[i].Key)
		equal(t, img.DiffIDs[3-i].String(), rows[i].DiffID)
		equal(t, img.Layers[3-i].String(), rows[i].Digest)
	}
	equal(t, 12, rows[3].Entries) // layer 1: 12 entries
	out := lines(ok(t, root, "layers", img.ChainIDs[2].String()))
	equal(t, 4, len(out))
	contains(t, out[1], "0  "+shortKey(img.ChainIDs[2].String()))
}

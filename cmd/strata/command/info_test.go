package command

import (
	"testing"
)

func TestInfo(t *testing.T) {
	root, img := demoStore(t)
	var rep infoReport
	decode(t, ok(t, root, "info", img.ChainIDs[1].String()), &rep)
	equal(t, "committed", rep.Info.Kind)
	equal(t, img.ChainIDs[0].String(), rep.Info.Parent)
	equal(t, img.DiffIDs[1].String(), rep.Info.Labels[LabelDiffID])
	if rep.Usage.Size <= 0 {
		t.Fatalf("usage %+v", rep.Usage)
	}
	equal(t, 1, len(rep.Mounts))
	equal(t, "overlay", rep.Mounts[0].Type)

	requireFails(t, runIn(t, root, "info", "nope"), ExitNotFound, `strata: info: stat "nope": not found`)
}

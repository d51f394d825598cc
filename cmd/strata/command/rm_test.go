package command

import (
	"testing"
)

func TestRm(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	ok(t, root, "prepare", "c2")
	equal(t, "c1\nc2\n", ok(t, root, "rm", "c1", "c2"))
	requireFails(t, runIn(t, root, "rm", img.ChainIDs[1].String()), ExitFailure,
		`strata: remove "`+img.ChainIDs[1].String()+`": snapshot has children: failed precondition`)
	requireFails(t, runIn(t, root, "rm", "c1"), ExitNotFound, `strata: remove "c1": not found`)
	var removed []string
	decode(t, ok(t, root, "rm", "--format", "json", img.ChainIDs[2].String()), &removed)
	equal(t, 1, len(removed))
	ok(t, root, "check")
}

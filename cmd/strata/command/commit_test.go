package command

import (
	"testing"
)

func TestCommit(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	equal(t, "app\n", ok(t, root, "commit", "--label", "v=1", "app", "c1"))
	var ls []lsEntry
	decode(t, ok(t, root, "ls", "--format", "json", "--filter", "name==app"), &ls)
	equal(t, "committed", ls[0].Kind)
	equal(t, "1", ls[0].Labels["v"])
	requireFails(t, runIn(t, root, "commit", "app2", "c1"), ExitNotFound, `strata: commit "c1" as "app2": not found`)
	requireFails(t, runIn(t, root, "commit", "app2", "app"), ExitFailure, `strata: commit "app" as "app2": "app" is committed, not active: failed precondition`)
}

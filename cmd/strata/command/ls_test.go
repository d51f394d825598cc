package command

import (
	"testing"
)

func TestLs(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "--label", "app=web", "c1", img.ChainIDs[2].String())

	out := lines(ok(t, root, "ls"))
	equal(t, 5, len(out), out)
	contains(t, out[0], "KEY")
	contains(t, out[0], "LABELS")
	contains(t, out[1], "c1")
	contains(t, out[1], "active")
	contains(t, out[1], "app=web")

	var ls []lsEntry
	decode(t, ok(t, root, "ls", "--format", "json"), &ls)
	equal(t, 4, len(ls))
	equal(t, "c1", ls[0].Key)
	equal(t, img.ChainIDs[2].String(), ls[0].Parent)
	for _, e := range ls[1:] {
		equal(t, "committed", e.Kind)
		if e.Size <= 0 || e.Inodes <= 0 {
			t.Fatalf("%s: no usage: %+v", e.Key, e)
		}
	}
	decode(t, ok(t, root, "ls", "--format", "json", "--filter", "kind==active"), &ls)
	equal(t, 1, len(ls))
	decode(t, ok(t, root, "ls", "--format", "json", "--filter", "labels.app==db"), &ls)
	equal(t, 0, len(ls))

	r := runIn(t, root, "ls", "--filter", "kind==")
	equal(t, ExitUsage, r.code, r.stderr)
}

package command

import (
	"testing"
)

func TestPrepare(t *testing.T) {
	root, img := demoStore(t)
	out := ok(t, root, "prepare", "--target", "/mnt/c1", "c1", img.ChainIDs[2].String())
	contains(t, out, " overlay /mnt/c1\n")
	var ls []lsEntry
	decode(t, ok(t, root, "ls", "--format", "json", "--filter", "name==c1"), &ls)
	equal(t, "active", ls[0].Kind)

	requireFails(t, runIn(t, root, "prepare", "c2", "sha256:ab"), ExitNotFound,
		`strata: prepare "c2": parent "sha256:ab": not found`)
	requireFails(t, runIn(t, root, "prepare", "c1"), ExitExists, `strata: prepare "c1": already exists`)
	requireFails(t, runIn(t, root, "prepare", "c3", "c1"), ExitUsage,
		`strata: prepare "c3": parent "c1" is active, not committed: invalid argument`)
	requireFails(t, runIn(t, root, "prepare", "--label", "x", "c3"), ExitUsage,
		`strata: prepare: label "x": want KEY=VALUE (KEY= removes)`)
}

func TestPrepare_Completion(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	// The parent completes to committed snapshots only.
	r := runIn(t, root, "__complete", "prepare", "c2", "sha256:")
	equal(t, ExitOK, r.code)
	contains(t, r.stdout, img.ChainIDs[0].String()+"\tcommitted\n")
	if r := runIn(t, root, "__complete", "prepare", "c2", "c"); len(lines(r.stdout)) != 1 {
		t.Fatalf("active c1 offered as parent: %q", r.stdout)
	}
	// Keys complete for info, rm, which...
	r = runIn(t, root, "__complete", "rm", "c")
	contains(t, r.stdout, "c1\tactive\n")
}

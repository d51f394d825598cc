package command

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

func TestCheck(t *testing.T) {
	root, _ := demoStore(t)
	equal(t, root+": ok\n", ok(t, root, "check"))

	// An orphan dir and a staging leftover: reported, exit status 7.
	mkfiles(t, filepath.Join(root, "snapshots", "999", "fs"), "junk=x")
	must(t, os.Mkdir(filepath.Join(root, "staging", "new-1"), 0o700))
	r := runIn(t, root, "check")
	equal(t, ExitInconsistent, r.code, r.stderr)
	contains(t, r.stderr, "orphan dir "+filepath.Join(root, "snapshots", "999"))
	contains(t, r.stderr, "leftover in staging: new-1")

	var rep map[string]any
	r = runIn(t, root, "check", "--format", "json")
	equal(t, ExitInconsistent, r.code)
	decode(t, r.stdout, &rep)
	equal(t, false, rep["ok"].(bool))

	// --repair removes them, keeps the snapshots.
	equal(t, root+": ok\n", ok(t, root, "check", "--repair"))
	equal(t, 3, len(lines(ok(t, root, "ls")))-1)
}

func TestCheck_RepairLeakedMount(t *testing.T) {
	testutil.RequireOverlay(t)
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	// A mount left under the root (a crashed tool).
	leak := filepath.Join(root, "staging", "leak")
	must(t, os.Mkdir(leak, 0o700))
	cleanupMount(t, leak)
	ok(t, root, "mount", "c1", leak)
	r := runIn(t, root, "check")
	equal(t, ExitInconsistent, r.code)
	contains(t, r.stderr, "leaked mount at "+leak)
	// Writers refuse to open the store: clearing staging/ would delete
	// through the mount.
	requireFails(t, runIn(t, root, "prepare", "c2"), ExitLocked,
		"strata: prepare: open store "+root+": leaked mount under the store root at "+leak+"; run 'strata check --repair' to detach it")

	r = runIn(t, root, "check", "--repair")
	equal(t, ExitOK, r.code, r.stderr)
	contains(t, r.stderr, "detached leaked mount "+leak)
	if mountedHere(t, filepath.Dir(leak)) {
		t.Fatal("still mounted")
	}
	// The active snapshot is intact.
	contains(t, ok(t, root, "ls"), "c1")
}

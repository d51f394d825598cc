package command

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

func TestUmount(t *testing.T) {
	testutil.RequireOverlay(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)

	equal(t, ExitOK, run(t, "mount", "-o", "lowerdir="+lowerdir, mnt).code)
	r := run(t, "--debug", "umount", mnt)
	equal(t, ExitOK, r.code, r.stderr)
	contains(t, r.stderr, "with the kernel backend")
	if mountedHere(t, mnt) {
		t.Fatal("still mounted")
	}

	// A second umount finds nothing there.
	requireFails(t, run(t, "umount", mnt), ExitNotFound, fmt.Sprintf("strata: umount: %q: not a mount point", mnt))
}

func TestUmount_Errors(t *testing.T) {
	dir := t.TempDir()
	requireFails(t, run(t, "umount", filepath.Join(dir, "nope")), ExitNotFound,
		fmt.Sprintf("strata: umount: %q: no such file or directory", filepath.Join(dir, "nope")))
	requireFails(t, run(t, "umount", dir), ExitNotFound, fmt.Sprintf("strata: umount: %q: not a mount point", dir))
	requireFails(t, run(t, "umount"), ExitUsage, "strata: umount: want 1 argument(s) (TARGET), got 0; see 'strata umount --help'")
}

func TestUmount_Busy(t *testing.T) {
	testutil.RequireOverlay(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	equal(t, ExitOK, run(t, "mount", "-o", "lowerdir="+lowerdir, mnt).code)

	f, err := os.Open(filepath.Join(mnt, "a"))
	must(t, err)
	r := run(t, "umount", mnt)
	must(t, f.Close())
	equal(t, ExitExists, r.code, r.stderr)
	contains(t, r.stderr, "busy")
	if !mountedHere(t, mnt) {
		t.Fatal("busy mount was detached")
	}
	equal(t, ExitOK, run(t, "umount", mnt).code)
}

package command

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

func TestMountSnapshot(t *testing.T) {
	testutil.RequireOverlay(t)
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	cleanupMount(t, mnt)

	ok(t, root, "mount", "c1", mnt)
	if !mountedHere(t, mnt) {
		t.Fatal("not mounted")
	}
	// The union: layer 2's motd, the opaque config dir, no whited-out file.
	b, err := os.ReadFile(filepath.Join(mnt, "etc/motd"))
	must(t, err)
	equal(t, "welcome to layer 2\n", string(b))
	equal(t, "[c.conf]", fmtNames(t, filepath.Join(mnt, "app/config")))
	if _, err := os.Stat(filepath.Join(mnt, "var/cache/big")); !os.IsNotExist(err) {
		t.Fatalf("whited-out file shows: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(mnt, "etc/new"), []byte("hi"), 0o644))
	contains(t, ok(t, root, "diff", "--stat", "c1"), "A /etc/new\n")

	// A second mount of the same active snapshot is refused.
	mnt2 := filepath.Join(t.TempDir(), "mnt2")
	must(t, os.Mkdir(mnt2, 0o755))
	cleanupMount(t, mnt2)
	r := runIn(t, root, "mount", "c1", mnt2)
	equal(t, ExitExists, r.code, r.stderr)

	ok(t, root, "umount", mnt)
	if mountedHere(t, mnt) {
		t.Fatal("still mounted")
	}
	ok(t, root, "commit", "app", "c1")

	// Committed and parentless snapshots mount read-only / as binds.
	ok(t, root, "mount", "app", mnt)
	if err := os.WriteFile(filepath.Join(mnt, "x"), nil, 0o644); err == nil {
		t.Fatal("committed snapshot mounted writable")
	}
	ok(t, root, "umount", mnt)
	ok(t, root, "prepare", "scratch")
	ok(t, root, "mount", "scratch", mnt)
	must(t, os.WriteFile(filepath.Join(mnt, "x"), nil, 0o644))
	ok(t, root, "umount", mnt)
	contains(t, ok(t, root, "diff", "--stat", "scratch"), "A /x\n")
	ok(t, root, "check")
}

func TestMountSnapshot_FUSE(t *testing.T) {
	testutil.RequireFUSE(t)
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	cleanupMount(t, mnt)
	ok(t, root, "--backend", "fuse", "mount", "--log", filepath.Join(t.TempDir(), "log"), "c1", mnt)
	var st unix.Statfs_t
	must(t, unix.Statfs(mnt, &st))
	equal(t, int64(fuseMagic), int64(st.Type), "statfs type")
	b, err := os.ReadFile(filepath.Join(mnt, "etc/motd"))
	must(t, err)
	equal(t, "welcome to layer 2\n", string(b))
	equal(t, "[c.conf]", fmtNames(t, filepath.Join(mnt, "app/config")))
	must(t, os.WriteFile(filepath.Join(mnt, "etc/new"), []byte("hi"), 0o644))

	// A second FUSE server on the same upper dir is refused, as the
	// kernel refuses a second overlay mount.
	mnt2 := filepath.Join(t.TempDir(), "mnt2")
	must(t, os.Mkdir(mnt2, 0o755))
	cleanupMount(t, mnt2)
	r := runIn(t, root, "--backend", "fuse", "mount", "--log", filepath.Join(t.TempDir(), "log"), "c1", mnt2)
	equal(t, ExitExists, r.code, r.stderr)
	contains(t, r.stderr, "already in use")
	if mountedHere(t, mnt2) {
		t.Fatal("second FUSE mount of one upper dir")
	}

	ok(t, root, "umount", mnt)
	contains(t, ok(t, root, "diff", "--stat", "c1"), "A /etc/new\n")
	ok(t, root, "check")
}

func TestMountSnapshot_Errors(t *testing.T) {
	root, _ := demoStore(t)
	mnt := t.TempDir()
	requireFails(t, runIn(t, root, "mount", "nope", mnt), ExitNotFound, `strata: mount: mounts "nope": not found`)
	requireFails(t, runIn(t, root, "mount", mnt), ExitUsage,
		"strata: mount: want KEY TARGET (a store snapshot) or -o lowerdir=DIR[:DIR...] TARGET (plain dirs), got 1 argument(s); see 'strata mount --help'")
}

func fmtNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return "[" + join(n) + "]"
}

func join(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out
}

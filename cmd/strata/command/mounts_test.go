package command

import (
	"testing"
)

func TestMounts(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	ok(t, root, "prepare", "base")

	out := ok(t, root, "mounts", "c1", "/mnt/x")
	contains(t, out, "mount -t overlay -o ")
	contains(t, out, ",upperdir="+root+"/snapshots/")
	contains(t, out, " overlay /mnt/x\n")
	contains(t, ok(t, root, "mounts", "base"), "mount -o rw,rbind "+root+"/snapshots/")

	var ms []mountJSON
	decode(t, ok(t, root, "mounts", "--format", "json", img.ChainIDs[0].String()), &ms)
	equal(t, "bind", ms[0].Type)
	equal(t, "ro", ms[0].Options[0])
}

func TestShellQuote(t *testing.T) {
	equal(t, "/a/b:c,d=e", shellQuote("/a/b:c,d=e"))
	equal(t, "'a b'", shellQuote("a b"))
	equal(t, `'it'\''s'`, shellQuote("it's"))
	equal(t, "''", shellQuote(""))
}

package command

import (
	"testing"
)

func TestWhich(t *testing.T) {
	root, img := demoStore(t)
	top := img.ChainIDs[2].String()
	out := lines(ok(t, root, "which", top, "/etc/motd"))
	equal(t, "/etc/motd: served by layer 1 ("+img.ChainIDs[1].String()+")", out[0])
	contains(t, out[3], "file   serves")
	contains(t, out[4], "file   hidden: hidden by the file in layer 1")

	var rep whichReport
	decode(t, ok(t, root, "which", "--format", "json", top, "/app/config"), &rep)
	equal(t, 0, rep.Served)
	equal(t, "opaque dir", rep.Layers[0].Entry)
	equal(t, "hidden", rep.Layers[2].Role)
	equal(t, "below the opaque dir in layer 0", rep.Layers[2].Why)

	// Deleted by a whiteout: explained, then exit status 3.
	r := runIn(t, root, "which", top, "/var/cache/big")
	equal(t, ExitNotFound, r.code)
	contains(t, r.stdout, "/var/cache/big: not in the union: deleted by the whiteout in layer 1\n")
	equal(t, `strata: which "`+top+`" "/var/cache/big": not found`+"\n", r.stderr)
	// Hidden by an opaque dir.
	r = runIn(t, root, "which", top, "/app/config/a.conf")
	equal(t, ExitNotFound, r.code)
	contains(t, r.stdout, "hidden: below the opaque dir in layer 0")
	requireFails(t, runIn(t, root, "which", top, "../x"), ExitUsage, `strata: which "`+top+`" "../x": path "../x": invalid path`)
}

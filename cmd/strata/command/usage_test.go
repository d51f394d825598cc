package command

import (
	"strings"
	"testing"
)

func TestUsage(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	var rows []usageEntry
	decode(t, ok(t, root, "usage", "--format", "json"), &rows)
	equal(t, 4, len(rows))
	var one usageEntry
	decode(t, ok(t, root, "usage", "--format", "json", img.ChainIDs[0].String()), &one)
	equal(t, rows[3], one)

	out := lines(ok(t, root, "usage"))
	equal(t, 6, len(out))
	if !strings.HasPrefix(out[5], "total") {
		t.Fatalf("no total: %q", out[5])
	}
	requireFails(t, runIn(t, root, "usage", "nope"), ExitNotFound, `strata: usage "nope": not found`)
}

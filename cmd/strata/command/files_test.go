package command

import (
	"testing"
)

func TestFiles(t *testing.T) {
	root, img := demoStore(t)
	top := img.ChainIDs[2].String()
	var rows []fileEntry
	decode(t, ok(t, root, "files", "--format", "json", top), &rows)
	got := map[string]string{}
	for _, r := range rows {
		got[r.Path] = r.Kind
	}
	equal(t, "opaque dir", got["/app/config"])
	equal(t, "file", got["/app/config/c.conf"])
	equal(t, 5, len(rows))

	out := ok(t, root, "files", "--layer", "1", top, "/var/cache")
	contains(t, out, "whiteout  ----------  -     /var/cache/big\n")
	requireFails(t, runIn(t, root, "files", "--layer", "3", top), ExitUsage,
		`strata: files "`+top+`": --layer 3: the snapshot has 3 layer(s)`)
	requireFails(t, runIn(t, root, "files", top, "/nope"), ExitNotFound,
		`strata: files "`+top+`" "/nope": no such file or directory`)
}

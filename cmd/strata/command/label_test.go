package command

import (
	"testing"
)

func TestLabel(t *testing.T) {
	root, img := demoStore(t)
	key := img.ChainIDs[0].String()
	out := ok(t, root, "label", key, "a=1", "b=2")
	contains(t, out, "a=1,b=2,strata.io/diff-id=")
	var labels map[string]string
	decode(t, ok(t, root, "label", "--format", "json", key, "a=", "c=3"), &labels)
	_, hasA := labels["a"]
	equal(t, false, hasA, "a removed")
	equal(t, "2", labels["b"])
	equal(t, "3", labels["c"])
	requireFails(t, runIn(t, root, "label", key), ExitUsage, "strata: label: want KEY and at least one k=v; see 'strata label --help'")
	requireFails(t, runIn(t, root, "label", "nope", "a=1"), ExitNotFound, `strata: label: update "nope": not found`)
}

package command

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/internal/ocidemo"
	"github.com/stratafs/strata/internal/testutil"
)

func TestImportImage(t *testing.T) {
	root, img := demoStore(t) // imports by tag
	// Without a tag: the only manifest. Already there: same top chain ID.
	dir := t.TempDir()
	_, err := ocidemo.Write(dir)
	must(t, err)
	r := runIn(t, root, "import-image", dir)
	equal(t, ExitOK, r.code, r.stderr)
	equal(t, img.ChainIDs[2].String()+"\n", r.stdout)
	contains(t, r.stderr, "already present")

	var rep struct {
		ChainID string          `json:"chain_id"`
		Layers  []importedLayer `json:"layers"`
	}
	decode(t, ok(t, root, "import-image", "--format", "json", dir), &rep)
	equal(t, img.ChainIDs[2].String(), rep.ChainID)
	equal(t, 3, len(rep.Layers))
	equal(t, img.DiffIDs[1], rep.Layers[1].DiffID)
}

func TestImportImage_Errors(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "store")
	img, err := ocidemo.Write(filepath.Join(dir, "img"))
	must(t, err)
	requireFails(t, runIn(t, root, "import-image", filepath.Join(dir, "img")+":nope"), ExitNotFound,
		`strata: import-image "`+filepath.Join(dir, "img")+`:nope": tag "nope": not found`)

	// A layer blob that does not match its digest is refused.
	// (Another valid gzip tar put in its place: only the digest tells.)
	blobs := filepath.Join(dir, "img", "blobs", "sha256")
	b, err := os.ReadFile(filepath.Join(blobs, img.Layers[2].Encoded()))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(blobs, img.Layers[1].Encoded()), b, 0o644))
	r := runIn(t, root, "import-image", filepath.Join(dir, "img"))
	equal(t, ExitUsage, r.code, r.stderr)
	contains(t, r.stderr, "digest")
	// The first layer, which was good, stays; the broken one left nothing.
	var ls []lsEntry
	decode(t, ok(t, root, "ls", "--format", "json"), &ls)
	equal(t, 1, len(ls))
	equal(t, img.ChainIDs[0].String(), ls[0].Key)
	ok(t, root, "check")
}

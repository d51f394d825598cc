package command

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/stratafs/strata/internal/ocidemo"
	"github.com/stratafs/strata/internal/testutil"
)

// writeLayers writes the demo layers as a plain, a gzip and a zstd tar.
func writeLayers(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for i, entries := range ocidemo.Layers {
		raw, err := ocidemo.LayerTar(entries)
		must(t, err)
		var b bytes.Buffer
		name := filepath.Join(dir, []string{"l1.tar", "l2.tar.gz", "l3.tar.zst"}[i])
		switch i {
		case 0:
			b.Write(raw)
		case 1:
			zw := gzip.NewWriter(&b)
			_, _ = zw.Write(raw)
			must(t, zw.Close())
		case 2:
			zw, err := zstd.NewWriter(&b)
			must(t, err)
			_, _ = zw.Write(raw)
			must(t, zw.Close())
		}
		must(t, os.WriteFile(name, b.Bytes(), 0o644))
		files = append(files, name)
	}
	return files
}

func TestImport(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "store")
	img, err := ocidemo.Write(filepath.Join(dir, "img"))
	must(t, err)
	files := writeLayers(t, dir)

	// Chain IDs as OCI computes them, whatever the compression.
	r := runIn(t, root, append([]string{"import"}, files...)...)
	equal(t, ExitOK, r.code, r.stderr)
	equal(t, img.ChainIDs[0].String()+"\n"+img.ChainIDs[1].String()+"\n"+img.ChainIDs[2].String()+"\n", r.stdout)
	contains(t, r.stderr, "layer 1/3 l1.tar: ") // plain progress lines off a terminal
	contains(t, r.stderr, "/s)")

	// Again: the same chain IDs, kept as they were.
	var out []importedLayer
	decode(t, ok(t, root, "import", "--format", "json", files[0]), &out)
	equal(t, img.ChainIDs[0].String(), out[0].ChainID)
	equal(t, true, out[0].Existed)

	// --parent: the next layer on an existing chain.
	decode(t, ok(t, root, "import", "--format", "json", "--parent", img.ChainIDs[0].String(), files[1]), &out)
	equal(t, img.ChainIDs[1].String(), out[0].ChainID)
}

func TestImport_Errors(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "store")
	files := writeLayers(t, dir)
	requireFails(t, runIn(t, root, "import", "--parent", "nope", files[0]), ExitNotFound, `strata: import: parent "nope": not found`)
	requireFails(t, runIn(t, root, "import", filepath.Join(dir, "missing.tar")), ExitNotFound,
		`strata: import "`+filepath.Join(dir, "missing.tar")+`": no such file or directory`)
	requireFails(t, runIn(t, root, "import"), ExitUsage, "strata: import: want at least one LAYER.tar; see 'strata import --help'")

	bad := filepath.Join(dir, "bad.tar.gz")
	must(t, os.WriteFile(bad, []byte{0x1f, 0x8b, 0x08, 0, 1, 2, 3}, 0o644))
	r := runIn(t, root, "import", bad)
	if r.code == ExitOK {
		t.Fatal("a broken tar imported")
	}
	// Nothing of it stays behind.
	equal(t, "KEY  KIND  PARENT  SIZE  INODES  CREATED  LABELS\n", ok(t, root, "ls"))
	ok(t, root, "check")
}

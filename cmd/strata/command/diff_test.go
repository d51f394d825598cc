package command

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/snapshot"
)

func TestDiff(t *testing.T) {
	root, img := demoStore(t)
	ok(t, root, "prepare", "c1", img.ChainIDs[2].String())
	s, err := snapshot.Open(root)
	must(t, err)
	ls, err := s.Layers(t.Context(), "c1")
	must(t, err)
	must(t, s.Close())
	mkfiles(t, ls[0].Dir, "etc/new=hello", "app/data/x=changed")

	stat := ok(t, root, "diff", "--stat", "c1")
	contains(t, stat, "A /etc/new\n")
	contains(t, stat, "M /app/data/x\n")
	var st diffStatReport
	decode(t, ok(t, root, "diff", "--stat", "--format", "json", "c1"), &st)
	equal(t, 1, st.Added)
	equal(t, 0, st.Deleted)

	// The tar of a committed layer: its whiteout as .wh.big.
	out := filepath.Join(t.TempDir(), "l2.tar")
	rep := ok(t, root, "diff", img.ChainIDs[1].String(), "-o", out)
	contains(t, rep, "1 whiteouts")
	f, err := os.Open(out)
	must(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		names[h.Name] = true
	}
	equal(t, true, names["var/cache/.wh.big"], names)

	v := ok(t, root, "view", "v1", img.ChainIDs[0].String())
	_ = v
	requireFails(t, runIn(t, root, "diff", "--stat", "v1"), ExitFailure, `strata: diff "v1": a view has no changes of its own: failed precondition`)
}

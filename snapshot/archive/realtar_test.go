package archive

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
)

// TestApplyRealTar checks Apply against GNU tar on a real tar stream named
// by STRATA_ARCHIVE_REAL_TAR (e.g. an exported image layer, or
// `tar --xattrs --format=pax -cf x.tar -C / usr`): both extractions must
// agree, and so must a WriteDiff round trip of the result.
func TestApplyRealTar(t *testing.T) {
	p := os.Getenv("STRATA_ARCHIVE_REAL_TAR")
	if p == "" {
		t.Skip("STRATA_ARCHIVE_REAL_TAR not set")
	}
	testutil.RequireRoot(t)
	stream, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	gnu := t.TempDir()
	cmd := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", p, "-C", gnu)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, out)
	}
	mine, sum := applyNew(t, stream)
	t.Logf("applied: %+v", sum)
	want, got := snap(t, gnu), snap(t, mine)
	// Parents missing from the stream are created at extraction time.
	inTar := map[string]bool{}
	for _, n := range tarNames(t, stream) {
		c, _ := cleanName(n)
		inTar[c] = true
	}
	for p, n := range want {
		if !inTar[p] && got[p] != nil {
			got[p].Mtime = n.Mtime
		}
	}
	requireSameTree(t, want, got, fstree.WithoutRoot())
	out, dsum := writeDiff(t, mine, nil)
	t.Logf("exported: %+v", dsum)
	again, _ := applyNew(t, out)
	requireSameTree(t, snap(t, mine), snap(t, again), fstree.WithoutRoot())
}

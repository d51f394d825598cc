package overlay

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

func TestMountsUnder(t *testing.T) {
	testutil.RequireRoot(t)
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A bind mount of the same filesystem, at a path with a space (mountinfo
	// escapes it as \040).
	src, at := filepath.Join(base, "src"), filepath.Join(base, "a dir", "mnt")
	for _, d := range []string{src, at} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(src, at, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(at, unix.MNT_DETACH) })

	got, err := MountsUnder(base)
	if err != nil || !slices.Equal(got, []string{at}) {
		t.Fatalf("MountsUnder(%s) = %q, %v; want [%q]", base, got, err, at)
	}
	if got, err := MountsUnder(src); err != nil || len(got) != 0 {
		t.Fatalf("MountsUnder(%s) = %q, %v; want none", src, got, err)
	}
	for dir, want := range map[string]bool{at: true, src: false, base: false} {
		if ok, err := IsMountPoint(dir); err != nil || ok != want {
			t.Errorf("IsMountPoint(%s) = %v, %v; want %v", dir, ok, err, want)
		}
	}
}

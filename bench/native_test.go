package bench

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

// TestNativeSharesAndRestoresLargeFiles: a mutating native run hard-links
// files of nativeLinkMin bytes or more, copies the rest, and puts the
// shared file back (size, mode, times) on unmount.
func TestNativeSharesAndRestoresLargeFiles(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	layer := filepath.Join(dir, "l0")
	if err := os.MkdirAll(filepath.Join(layer, "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	large := filepath.Join(layer, "big", "large.bin")
	if err := os.WriteFile(large, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(large, nativeLinkMin); err != nil { // sparse
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layer, "small"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	n := newNative(filepath.Join(dir, "scratch"))
	upper, target := filepath.Join(dir, "upper"), filepath.Join(dir, "mnt")
	for _, p := range []string{upper, target} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	un, err := n.Mount([]string{layer}, upper, "", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = un() })
	flat, err := n.flattened([]string{layer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(filepath.Join(flat, "big", "large.bin"))
	if err != nil {
		t.Fatal(err)
	}
	linked, err := os.Stat(filepath.Join(upper, "big", "large.bin"))
	if err != nil || !os.SameFile(linked, before) {
		t.Fatalf("large file in the copy is not a hard link of the flattened one (%v)", err)
	}
	f, err := os.OpenFile(filepath.Join(target, "big", "large.bin"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(target, "big", "large.bin"), 0o600); err != nil {
		t.Fatal(err)
	}
	small, err := os.Stat(filepath.Join(target, "small"))
	if err != nil || small.Mode().Perm() != 0o640 || small.Size() != 1 {
		t.Fatalf("small file in the copy: %v %v", small, err)
	}
	if err := un(); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(filepath.Join(flat, "big", "large.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() || after.Mode() != before.Mode() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("shared file not restored: size %d mode %v mtime %v, want %d %v %v",
			after.Size(), after.Mode(), after.ModTime(), before.Size(), before.Mode(), before.ModTime())
	}
}

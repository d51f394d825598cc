//go:build linux

package fuse

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// TestNoEscapeThroughSwappedDir: the server never follows a symlink that
// a concurrent rename put in place of a dir above the object it works on.
// The race is made deterministic by swapping the dir in the upper layer
// behind the server's back while the mount still knows z/b as a dir.
func TestNoEscapeThroughSwappedDir(t *testing.T) {
	testutil.RequireFUSE(t)
	l := newCrossLayers(t)
	root, _ := mountFUSE(t, l)
	outside := t.TempDir()
	for _, d := range []string{filepath.Join(root, "z/b"), filepath.Join(outside, "b")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "z/b/f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "b/f"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	// swap upper/z for a symlink to outside
	if err := os.Rename(filepath.Join(l.upper, "z"), filepath.Join(l.upper, "z.moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(l.upper, "z")); err != nil {
		t.Fatal(err)
	}
	p := func(n string) string { return filepath.Join(root, "z/b", n) }
	os.WriteFile(p("new"), []byte("pwned"), 0o644)
	os.Mkdir(p("newdir"), 0o755)
	os.Remove(p("f"))
	unix.Setxattr(p("f"), "user.x", []byte("y"), 0)
	unix.Chmod(p("f"), 0o777)
	if b, err := os.ReadFile(p("f")); err == nil && string(b) == "secret" {
		t.Errorf("read through the swapped dir reached the outside file")
	}
	for _, n := range []string{"new", "newdir"} {
		if _, err := os.Lstat(filepath.Join(outside, "b", n)); err == nil {
			t.Errorf("%s was created outside the upper layer", n)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(outside, "b/f"), &st); err != nil {
		t.Errorf("outside file removed: %v", err)
	} else if st.Mode&0o777 != 0o600 {
		t.Errorf("outside file chmod'ed to %o", st.Mode&0o777)
	}
	if _, err := unix.Getxattr(filepath.Join(outside, "b/f"), "user.x", nil); err == nil {
		t.Errorf("xattr set on the outside file")
	}
}

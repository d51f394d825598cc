package overlay

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestKernelWrittenLayers lets kernel overlayfs write the upper layer
// (dir renames make redirects, chmod/rename of lower files make metacopy
// files, unlink/rmdir make whiteouts), then checks that strata reads the
// result as the kernel does, and that strata's own copy-ups and removals
// on top of it keep agreeing.
func TestKernelWrittenLayers(t *testing.T) {
	testutil.RequireOverlay(t)
	s := fixture{upper: []string{}, lowers: [][]string{
		{"f a/b/c/file1 one", "f a/b/f2 two", "f m/n/q q", "f m/n/r/deep d", "f big bigdata", "f mv moved", "f gone g", "d rmd", "f keep k"},
		{"f a/b/c/file0 zero", "f a/x x", "f m/n/under u", "f top t", "f mv older"},
	}}.build(t)
	target := t.TempDir()
	if err := Mount(s, target, MountOptions{}); err != nil {
		t.Fatalf("kernel mount: %v", err)
	}
	mounted := true
	defer func() {
		if mounted {
			Unmount(target)
		}
	}()
	k := func(p string) string { return filepath.Join(target, p) }
	steps := []func() error{
		func() error { return os.Rename(k("a/b"), k("a/renamed")) },            // relative redirect
		func() error { return os.Rename(k("m/n"), k("a/renamed/c/moved")) },    // absolute redirect
		func() error { return os.Chmod(k("big"), 0o600) },                      // metacopy
		func() error { return os.Rename(k("mv"), k("a/renamed/mv2")) },         // metacopy + redirect
		func() error { return os.Remove(k("gone")) },                           // whiteout
		func() error { return os.Remove(k("rmd")) },                            // whiteout for a dir
		func() error { return os.Mkdir(k("rmd"), 0o700) },                      // opaque dir
		func() error { return os.WriteFile(k("rmd/new"), []byte("n"), 0o644) }, // inside it
		func() error { return os.Rename(k("a/x"), k("a/renamed/c/moved/x2")) }, // into a redirected dir
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("kernel step %d: %v", i, err)
		}
	}
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
	mounted = false
	// The kernel wrote redirects and metacopy files; make sure of it, so
	// the test keeps testing what it claims.
	f := s.Format()
	for p, x := range map[string]string{"a/renamed": XattrRedirect, "a/renamed/c/moved": XattrRedirect, "big": XattrMetacopy, "a/renamed/mv2": XattrMetacopy} {
		if _, ok, err := getxattr(filepath.Join(s.Upper(), p), f.Xattr(x)); err != nil || !ok {
			t.Errorf("kernel did not write %s on %s (%v); the test needs it", x, p, err)
		}
	}
	e, err := s.Lookup("a/renamed/mv2")
	if err != nil || !e.Metacopy || e.DataLayer != 1 {
		t.Errorf("metacopy with redirect: %+v %v", e, err)
	}
	compareWithKernel(t, s)
	// strata writes on top of the kernel's upper.
	for _, p := range []string{"big", "a/renamed/mv2", "a/renamed/c/moved/r/deep", "a/renamed/c/file0"} {
		if _, err := s.CopyUp(p); err != nil {
			t.Fatalf("CopyUp(%s): %v", p, err)
		}
	}
	for _, p := range []string{"a/renamed/c/moved/under", "a/renamed/f2", "keep"} {
		if err := s.Remove(p); err != nil {
			t.Fatalf("Remove(%s): %v", p, err)
		}
	}
	if _, err := s.CopyUpMeta("top"); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.Upper(), "big"), &st); err != nil || st.Blocks == 0 {
		t.Errorf("big after data copy-up: blocks %d %v", st.Blocks, err)
	}
	compareWithKernel(t, s)
}

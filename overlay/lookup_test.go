package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"golang.org/x/sys/unix"
)

// want describes the expected lookup of one path: "ENOENT", "ENOTDIR", or
// "LAYER TYPE" with TYPE one of f d l.
type lookupCase struct {
	name string
	fx   fixture
	want map[string]string
	// kernelDiffers says why TestKernelOracle skips the case.
	kernelDiffers string
}

// The kernel (6.18) treats any empty regular file with the whiteout xattr
// as a whiteout on lookup, in any layer, whatever its parent's opaque
// marker; but its readdir filters them only in lower dirs marked "x". The
// names are listed and then fail with ENOENT. strata follows the
// documented, self-consistent rule (lower layers, parent marked "x") that
// the kernel's readdir uses; strata never writes xattr whiteouts itself.
const xwhiteoutQuirk = "kernel lookup honours stray xattr whiteouts its readdir lists"

var lookupCases = []lookupCase{
	{name: "char whiteout",
		fx:   fixture{lowers: [][]string{{"w f"}, {"f f x"}}},
		want: map[string]string{"f": "ENOENT"}},
	{name: "char whiteout hides dir",
		fx:   fixture{upper: []string{"w d"}, lowers: [][]string{{"f d/a a"}}},
		want: map[string]string{"d": "ENOENT", "d/a": "ENOENT"}},
	{name: "xattr whiteout in opaque x lower dir",
		fx: fixture{upper: []string{"f up u"}, lowers: [][]string{
			{"d dir", "ox dir", "xw dir/g", "f dir/add a"},
			{"f dir/g g", "f dir/keep k"}}},
		want: map[string]string{"dir": "1 d", "dir/g": "ENOENT", "dir/keep": "2 f", "dir/add": "1 f"}},
	{name: "xattr whiteout in opaque x lower root",
		fx:   fixture{upper: []string{}, lowers: [][]string{{"ox .", "xw g", "f keep k"}, {"f g g", "f h h"}}},
		want: map[string]string{"g": "ENOENT", "h": "2 f", "keep": "1 f"}},
	{name: "opaque markers on layer roots ignored",
		fx:   fixture{upper: []string{"o ."}, lowers: [][]string{{"o .", "f a a"}, {"f b b"}}},
		want: map[string]string{"a": "1 f", "b": "2 f"}},
	{name: "xattr whiteout ignored without x",
		fx:            fixture{lowers: [][]string{{"xw dir/g"}, {"f dir/g g"}}},
		want:          map[string]string{"dir/g": "0 f"},
		kernelDiffers: xwhiteoutQuirk},
	{name: "xattr whiteout ignored in upper",
		fx:            fixture{upper: []string{"d dir", "ox dir", "xw dir/g"}, lowers: [][]string{{"f dir/g g", "f dir/h h"}}},
		want:          map[string]string{"dir/g": "0 f", "dir/h": "1 f"},
		kernelDiffers: xwhiteoutQuirk},
	{name: "opaque y lower",
		fx:   fixture{lowers: [][]string{{"f dir/new n", "o dir"}, {"f dir/old o", "f other o"}}},
		want: map[string]string{"dir/new": "0 f", "dir/old": "ENOENT", "other": "1 f"}},
	{name: "opaque y upper",
		fx:   fixture{upper: []string{"f dir/new n", "o dir"}, lowers: [][]string{{"f dir/old o"}}},
		want: map[string]string{"dir": "0 d", "dir/new": "0 f", "dir/old": "ENOENT"}},
	{name: "userxattr opaque and whiteouts",
		fx: fixture{user: true, upper: []string{"d t"}, lowers: [][]string{
			{"f dir/new n", "o dir", "d t", "X trusted.overlay.opaque t y", "d x", "ox x", "xw x/g"},
			{"f dir/old o", "f t/old o", "f x/g g", "f x/h h"}}},
		want: map[string]string{"dir/old": "ENOENT", "t/old": "2 f", "x/g": "ENOENT", "x/h": "2 f"}},
	{name: "trusted format ignores user.overlay",
		fx:   fixture{lowers: [][]string{{"d u", "X user.overlay.opaque u y"}, {"f u/old o"}}},
		want: map[string]string{"u/old": "1 f"}},
	{name: "precedence",
		fx: fixture{upper: []string{"f a u"}, lowers: [][]string{
			{"f a l0", "f x l0", "f y/z z"},
			{"f a l1", "f x/y y", "f y y"}}},
		want: map[string]string{"a": "0 f", "x": "1 f", "x/y": "ENOTDIR", "y": "1 d", "y/z": "1 f"}},
	{name: "whiteout in the middle stops a dir",
		fx:   fixture{lowers: [][]string{{"f a/1 1"}, {"w a"}, {"f a/2 2"}}},
		want: map[string]string{"a/1": "0 f", "a/2": "ENOENT"}},
	{name: "non-dir in the middle stops a dir",
		fx:   fixture{lowers: [][]string{{"f a/1 1"}, {"f a f"}, {"f a/2 2"}}},
		want: map[string]string{"a/1": "0 f", "a/2": "ENOENT"}},
	{name: "absolute redirect",
		fx:   fixture{upper: []string{"d new", "r new /old", "w old", "f new/b b"}, lowers: [][]string{{"f old/a A"}}},
		want: map[string]string{"new/a": "1 f", "new/b": "0 f", "old": "ENOENT"}},
	{name: "relative redirect",
		fx:   fixture{upper: []string{"d rb", "r rb rel", "w rel"}, lowers: [][]string{{"f rel/r R", "f rel/s S"}}},
		want: map[string]string{"rb/r": "1 f", "rel/r": "ENOENT"}},
	{name: "redirect in a lower layer",
		fx:   fixture{upper: []string{}, lowers: [][]string{{"d n", "r n /deep/o"}, {"f deep/o/x X", "f n/y Y"}}},
		want: map[string]string{"n/x": "2 f", "n/y": "ENOENT"}},
	{name: "redirect ignored under userxattr",
		fx:   fixture{user: true, upper: []string{"d new", "r new /old"}, lowers: [][]string{{"f old/a A"}}},
		want: map[string]string{"new": "EPERM", "old/a": "1 f"}},
	{name: "metacopy refused under userxattr",
		fx:   fixture{user: true, upper: []string{"f meta", "t meta 6", "m meta"}, lowers: [][]string{{"f meta l3meta"}}},
		want: map[string]string{"meta": "EPERM"}},
	{name: "metacopy",
		fx: fixture{upper: []string{"f meta", "t meta 6", "m meta", "c meta 600"},
			lowers: [][]string{{"f meta l3meta"}}},
		want: map[string]string{"meta": "0 f"}},
	{name: "symlink",
		fx:   fixture{lowers: [][]string{{"s sym a/f1", "f a/f1 x"}}},
		want: map[string]string{"sym": "0 l", "sym/x": "ENOTDIR"}},
}

func TestLookupForms(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range lookupCases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.fx.build(t)
			for p, w := range tc.want {
				e, err := s.Lookup(p)
				var got string
				switch {
				case errors.Is(err, fs.ErrNotExist):
					got = "ENOENT"
				case errors.Is(err, unix.ENOTDIR):
					got = "ENOTDIR"
				case errors.Is(err, unix.EPERM):
					got = "EPERM"
				case err != nil:
					t.Fatalf("Lookup(%q): %v", p, err)
				default:
					typ := "f"
					if e.Dir != nil {
						typ = "d"
					} else if e.Stat.Mode&unix.S_IFMT == unix.S_IFLNK {
						typ = "l"
					}
					got = itoa(e.Layer) + " " + typ
				}
				if got != w {
					t.Errorf("Lookup(%q) = %s, want %s", p, got, w)
				}
			}
			if !strings.Contains(fmt.Sprint(tc.want), "EPERM") {
				unionTree(t, s) // ReadDir and Lookup agree
			}
		})
	}
}

// TestKernelOracle mounts every lookup case with kernel overlayfs and
// compares the whole tree (names, types, perms, data) with strata's view.
func TestKernelOracle(t *testing.T) {
	testutil.RequireOverlay(t)
	for _, tc := range lookupCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kernelDiffers != "" {
				t.Skip(tc.kernelDiffers)
			}
			fx := tc.fx
			if fx.upper == nil {
				fx.upper = []string{}
			}
			s := fx.build(t)
			var eperm []string
			for p, w := range tc.want {
				if w == "EPERM" {
					eperm = append(eperm, p)
				}
			}
			if eperm == nil {
				compareWithKernel(t, s)
				return
			}
			target := t.TempDir()
			if err := Mount(s, target, MountOptions{ReadOnly: true}); err != nil {
				t.Fatalf("kernel mount: %v", err)
			}
			defer Unmount(target)
			for _, p := range eperm {
				if _, err := os.Lstat(filepath.Join(target, p)); !errors.Is(err, unix.EPERM) {
					t.Errorf("kernel: lstat %s: %v, want EPERM", p, err)
				}
			}
		})
	}
}

func compareWithKernel(t *testing.T, s *Stack) {
	t.Helper()
	got := unionTree(t, s)
	target := t.TempDir()
	if err := Mount(s, target, MountOptions{ReadOnly: true}); err != nil {
		t.Fatalf("kernel mount: %v", err)
	}
	defer func() {
		if err := Unmount(target); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	diffTrees(t, got, mountTree(t, target))
}

func TestMetacopyData(t *testing.T) {
	testutil.RequireRoot(t)
	s := fixture{upper: []string{"f meta", "t meta 6", "m meta", "c meta 600"},
		lowers: [][]string{{"f meta l1"}, {"f meta l3meta"}}}.build(t)
	// The middle layer's file is itself a metacopy: data comes from the bottom.
	mkLayer(t, s.Lowers()[0], Format{}, "m meta")
	e, err := s.Lookup("meta")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Metacopy || e.Layer != 0 || e.DataLayer != 2 || e.DataPath != filepath.Join(s.Lowers()[1], "meta") {
		t.Fatalf("metacopy entry: %+v", e)
	}
	// No data anywhere below: inconsistent.
	s2 := fixture{upper: []string{"f meta", "m meta"}, lowers: [][]string{{"d other"}}}.build(t)
	if _, err := s2.Lookup("meta"); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("metacopy without data: %v, want ErrInconsistent", err)
	}
}

func TestLookupInvalidPaths(t *testing.T) {
	s := fixture{lowers: [][]string{{"f a/b b"}}}.build(t)
	for _, p := range []string{"..", "../x", "a/../../x", "a\x00b"} {
		if _, err := s.Lookup(p); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("Lookup(%q) = %v, want ErrInvalidPath", p, err)
		}
	}
	for _, p := range []string{"/a/b", "a//b", "./a/./b", "a/x/../b"} {
		e, err := s.Lookup(p)
		if err != nil || e.Path != "a/b" {
			t.Errorf("Lookup(%q) = %v, %v; want a/b", p, e, err)
		}
	}
	d, err := s.LookupDir("a")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"", ".", "..", "b/c"} {
		if _, err := s.LookupIn(d, n); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("LookupIn(a, %q) = %v, want ErrInvalidPath", n, err)
		}
	}
	if _, err := s.LookupIn(d, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if _, err := s.LookupDir("a/b"); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("LookupDir(file): %v", err)
	}
	if e, err := s.Lookup(""); err != nil || e.Path != "." || e.Dir == nil {
		t.Errorf("root: %+v %v", e, err)
	}
}

func TestHidden(t *testing.T) {
	testutil.RequireRoot(t)
	s := fixture{upper: []string{"f a u", "d d"}, lowers: [][]string{
		{"f a l0", "d d", "f b l0"},
		{"f a l1", "d d", "w b"},
		{"w a", "d d"},
		{"f a l3", "f b l3"},
	}}.build(t)
	for p, want := range map[string]string{"a": "[1 2]", "d": "[1 2 3]", "b": "[]", ".": "[1 2 3 4]"} {
		e, err := s.Lookup(p)
		if err != nil {
			t.Fatal(err)
		}
		h, err := s.Hidden(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(h); got != want && (want != "[]" || h != nil) {
			t.Errorf("Hidden(%s) = %s, want %s", p, got, want)
		}
	}
	pd, _ := s.LookupDir(".")
	for name, want := range map[string]bool{"a": true, "b": true, "d": true, "nope": false} {
		if got, err := s.HasLower(pd, name); err != nil || got != want {
			t.Errorf("HasLower(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
}

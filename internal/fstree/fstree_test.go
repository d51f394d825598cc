package fstree

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSnapshotAndDiff(t *testing.T) {
	dir := t.TempDir()
	w := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	w("d/a", "a")
	w("b", "b")
	if err := os.Symlink("d/a", filepath.Join(dir, "s")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "d/a"), filepath.Join(dir, "h")); err != nil {
		t.Fatal(err)
	}
	before, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if before["h"].Link != "d/a" || before["d/a"].Link != "d/a" || before["b"].Link != "" {
		t.Errorf("link groups: h=%q d/a=%q b=%q", before["h"].Link, before["d/a"].Link, before["b"].Link)
	}
	if before["s"].Target != "d/a" || before["d"].Type.IsDir() != true {
		t.Errorf("nodes: %+v %+v", before["s"], before["d"])
	}
	if d := Diff(before, before); len(d) != 0 {
		t.Errorf("self diff: %q", d)
	}

	w("b", "B")
	if err := os.Chmod(filepath.Join(dir, "d/a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "h")); err != nil {
		t.Fatal(err)
	}
	w("h", "a")
	if err := unix.Lsetxattr(filepath.Join(dir, "b"), "user.x", []byte("1"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "d"), old, old); err != nil {
		t.Fatal(err)
	}
	after, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Diff(before, after), "\n")
	for _, want := range []string{"b: content differs", "b: xattr user.x differs", "d/a: mode differs: 0644 != 0600", "h: hard-link group differs", "d: mtime differs"} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains("\n"+got, "\ns:") {
		t.Errorf("unchanged symlink reported:\n%s", got)
	}
	ign, err := Snapshot(dir, WithIgnore(func(p string) bool { return p == "d" }))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ign["d/a"]; ok {
		t.Error("WithIgnore did not skip the subtree")
	}
}

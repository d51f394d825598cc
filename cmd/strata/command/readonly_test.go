package command

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/snapshot"
)

// The inspection commands leave the store byte-identical: every file under
// the root hashes the same (content, mode, size, mtime, xattrs) before and
// after.
func TestInspectionLeavesStoreUnchanged(t *testing.T) {
	root, img := demoStore(t)
	top := img.ChainIDs[2].String()
	ok(t, root, "prepare", "c1", top)
	// Give the active snapshot some content, as a container would.
	ls, err := func() ([]snapshot.Layer, error) {
		s, err := snapshot.Open(root)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return s.Layers(t.Context(), "c1")
	}()
	must(t, err)
	mkfiles(t, ls[0].Dir, "etc/new=hello")

	before := treeHash(t, root)
	out := filepath.Join(t.TempDir(), "diff.tar")
	for _, args := range [][]string{
		{"ls"}, {"ls", "--format", "json"}, {"tree"}, {"tree", "--format", "json"},
		{"info", top}, {"info", "c1"}, {"usage"}, {"usage", "c1"}, {"usage", "--format", "json"},
		{"mounts", "c1"}, {"layers", "c1"}, {"layers", top, "--format", "json"},
		{"files", top}, {"files", "--layer", "2", "c1", "/var"},
		{"which", "c1", "/etc/motd"}, {"which", "c1", "/app/config/c.conf", "--format", "json"},
		{"diff", "c1", "-o", out}, {"diff", "--stat", "c1"}, {"diff", top, "-o", out, "--compression", "gzip"},
		{"check"},
	} {
		r := runIn(t, root, args...)
		equal(t, ExitOK, r.code, args, r.stderr)
	}
	if d := diffHashes(before, treeHash(t, root)); len(d) > 0 {
		t.Fatalf("inspection changed the store: %s", strings.Join(d, ", "))
	}
}

// While another process owns the store, commands fail at once with the
// owner's pid and command line, read-only ones included.
func TestStoreLockedNamesOwner(t *testing.T) {
	root, _ := demoStore(t)
	s, err := snapshot.Open(root)
	must(t, err)
	t.Cleanup(func() { _ = s.Close() })
	want := fmt.Sprintf("owned by pid %d (%s", os.Getpid(), os.Args[0])
	for _, args := range [][]string{{"ls"}, {"tree"}, {"prepare", "c1"}, {"check"}, {"gc"}} {
		r := runIn(t, root, args...)
		equal(t, ExitLocked, r.code, args, r.stderr)
		contains(t, r.stderr, "strata: ")
		contains(t, r.stderr, "store is locked by another owner: "+want)
		equal(t, 1, strings.Count(r.stderr, "\n"), "one line")
	}
}

// A read-only command on a root without a store says so.
func TestNoStore(t *testing.T) {
	root := filepath.Join(t.TempDir(), "none")
	r := runIn(t, root, "ls")
	requireFails(t, r, ExitNotFound, fmt.Sprintf("strata: ls: open store %s: no store here: not found", root))
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatal("ls created the root")
	}
}

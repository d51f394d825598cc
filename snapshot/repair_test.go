package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestOpenRepairsCrashLeftovers pins what internal/reliability's crash
// harness found: a crash between Commit's transaction and the removal of
// the work dir left a committed snapshot with a work dir, and a crash
// between create's rename and its transaction commit left an orphan dir
// under the id the next Prepare gets, so that Prepare failed until someone
// ran Cleanup. Open now repairs both.
func TestOpenRepairsCrashLeftovers(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	mustCommitted(t, s, "base", "", map[string]string{"f": "x"})
	id := mustID(t, s, "base")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What the crashes leave.
	if err := os.Mkdir(filepath.Join(root, snapshotsDir, strconv.FormatUint(id, 10), "work"), 0o711); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(root, snapshotsDir, strconv.FormatUint(id+1, 10))
	if err := os.MkdirAll(filepath.Join(orphan, "fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(orphan, "fs", "half"), []byte("x"), 0o644)

	s = newTestStoreAt(t, root)
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check after open: %v", err)
	}
	if _, err := s.Prepare(ctx, "next", "base"); err != nil {
		t.Fatalf("prepare after a crash: %v", err)
	}
}

// newTestStoreAt opens the store at root, with newTestStore's checks at
// the end of the test.
func newTestStoreAt(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(root)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { checkAfterReopen(t, s) })
	return s
}

// TestOpenRemovesUnfinishedImports: a crash during Import left its
// temporary active snapshot behind, visible to Walk; Open removes it (and
// only it: a client's active snapshot stays).
func TestOpenRemovesUnfinishedImports(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "import-0123-layer", "", WithLabels(map[string]string{importLabel: "layer"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "client", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newTestStoreAt(t, root)
	if _, err := s.Stat(ctx, "import-0123-layer"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unfinished import after reopen: %v", err)
	}
	if _, err := s.Stat(ctx, "client"); err != nil {
		t.Errorf("client snapshot after reopen: %v", err)
	}
}

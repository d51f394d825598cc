package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReadOnly(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	if _, err := Open(root, WithReadOnly()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read-only open of no store: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatal("read-only open created the root")
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	mustCommitted(t, s, "base", "", map[string]string{"a": "1"})
	if _, err := s.Prepare(ctx, "c1", "base"); err != nil {
		t.Fatal(err)
	}
	// While the writer has it: readers fail at once, naming it.
	if _, err := Open(root, WithReadOnly()); !errors.Is(err, ErrLocked) {
		t.Fatalf("read-only open of a held store: %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	r1, err := Open(root, WithReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := Open(root, WithReadOnly()) // readers share
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if !r1.ReadOnly() {
		t.Fatal("ReadOnly() false")
	}
	// A writer is refused while readers hold it.
	if _, err := Open(root); !errors.Is(err, ErrLocked) {
		t.Fatalf("open for writing under readers: %v, want ErrLocked", err)
	}
	if _, err := r1.Stat(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	ls, err := r1.Layers(ctx, "c1")
	if err != nil || len(ls) != 2 || ls[0].Key != "c1" || ls[1].Key != "base" {
		t.Fatalf("layers: %+v, %v", ls, err)
	}
	if err := r1.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"prepare": func() error { _, err := r1.Prepare(ctx, "c2", ""); return err }(),
		"remove":  r1.Remove(ctx, "c1"),
		"commit":  r1.Commit(ctx, "n", "c1"),
		"cleanup": r1.Cleanup(ctx),
		"update":  func() error { _, err := r1.Update(ctx, Info{Name: "c1"}); return err }(),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on a read-only store: %v, want ErrReadOnly", name, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(root, stagingDir)); len(ents) != 0 {
		t.Fatalf("staging not empty: %v", ents)
	}
}

package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// newTestStore opens a store in a fresh temp dir. When the test ends it
// closes the store, reopens it (proving the metadata survives a restart)
// and runs Check, failing the test on any inconsistency.
func newTestStore(t *testing.T, opts ...Option) *Store {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root, opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { checkAfterReopen(t, s) })
	return s
}

// checkAfterReopen closes s, reopens its root and runs Check.
func checkAfterReopen(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	s2, err := Open(s.Root())
	if err != nil {
		t.Errorf("reopen: %v", err)
		return
	}
	defer s2.Close()
	if err := s2.Check(context.Background()); err != nil {
		t.Errorf("check after test: %v", err)
	}
}

// mustCommitted creates the committed snapshot name on parent, with the
// files in files (name -> content) written into its layer.
func mustCommitted(t *testing.T, s *Store, name, parent string, files map[string]string) {
	t.Helper()
	ctx := context.Background()
	key := name + "-active"
	if _, err := s.Prepare(ctx, key, parent); err != nil {
		t.Fatal(err)
	}
	dir, err := s.upperDir(key)
	if err != nil {
		t.Fatal(err)
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(ctx, name, key); err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("%s: unexpected error: %v", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// bindLeak bind-mounts a fresh dir holding a file "precious" at at (created)
// and returns the path of that file. The mount goes away with the test.
func bindLeak(t *testing.T, at string) string {
	t.Helper()
	victim := t.TempDir()
	precious := filepath.Join(victim, "precious")
	if err := os.WriteFile(precious, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(victim, at, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", at, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(at, unix.MNT_DETACH) })
	return precious
}

// TestOpenDoesNotDeleteThroughLeakedMount pins a data-loss bug: Open empties
// staging/, and with a mount left under it, os.RemoveAll deleted the
// mounted tree (a container's rootfs: whiteouts in its upper dir).
func TestOpenDoesNotDeleteThroughLeakedMount(t *testing.T) {
	testutil.RequireRoot(t)
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	leak := filepath.Join(root, stagingDir, "leak")
	precious := bindLeak(t, leak)

	s, err = Open(root)
	if err != nil {
		t.Fatalf("open with a leaked mount in staging: %v", err)
	}
	defer s.Close()
	if _, err := os.Stat(precious); err != nil {
		t.Fatalf("Open deleted through the mount: %v", err)
	}
	if err := s.Check(context.Background()); err == nil {
		t.Error("Check does not report the leaked mount")
	}

	// Cleanup of an orphan snapshot dir with a mount inside refuses too.
	orphan := filepath.Join(root, snapshotsDir, "999999", "fs")
	precious2 := bindLeak(t, orphan)
	err = s.Cleanup(context.Background())
	if !errors.Is(err, ErrFailedPrecondition) {
		t.Errorf("Cleanup with a mount in an orphan dir: got %v, want ErrFailedPrecondition", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(root)
	if err != nil {
		t.Fatalf("open with a leaked mount in an orphan dir: %v", err)
	}
	defer s.Close()
	for _, p := range []string{precious, precious2} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Cleanup deleted through a mount: %v", err)
		}
	}
}

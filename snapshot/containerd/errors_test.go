package containerd

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/stratafs/strata/snapshot"
)

func TestErrorMapping(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	sn, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	ctx := context.Background()
	if _, err := sn.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.View(ctx, "v", "c"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		err   error
		is    func(error) bool
		store error
	}{
		{"stat missing", func() error { _, err := sn.Stat(ctx, "nope"); return err }(), errdefs.IsNotFound, snapshot.ErrNotFound},
		{"prepare existing", func() error { _, err := sn.Prepare(ctx, "c", ""); return err }(), errdefs.IsAlreadyExists, snapshot.ErrAlreadyExists},
		{"prepare empty key", func() error { _, err := sn.Prepare(ctx, "", ""); return err }(), errdefs.IsInvalidArgument, snapshot.ErrInvalidArgument},
		{"remove parent", sn.Remove(ctx, "c"), errdefs.IsFailedPrecondition, snapshot.ErrFailedPrecondition},
		{"commit view", sn.Commit(ctx, "x", "v"), errdefs.IsFailedPrecondition, snapshot.ErrFailedPrecondition},
		{"second open", func() error { _, err := Open(root); return err }(), errdefs.IsUnavailable, snapshot.ErrLocked},
	} {
		if !tc.is(tc.err) || !errors.Is(tc.err, tc.store) {
			t.Errorf("%s: %v is not classified as expected", tc.name, tc.err)
		}
	}

	_ = sn.(snapshots.Cleaner)
}

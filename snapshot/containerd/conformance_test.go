package containerd

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/snapshot"
)

// TestContainerdConformance runs containerd's snapshotter suite against a
// strata store. After each case the store is reopened and checked.
func TestContainerdConformance(t *testing.T) {
	testutil.RequireOverlay(t)
	testsuite.SnapshotterSuite(t, "strata", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sn, err := Open(root)
		if err != nil {
			return nil, nil, err
		}
		cleanup := func() error {
			// The suite closes the snapshotter itself in some cases
			// (CloseTwice); closing again is fine.
			if err := sn.Close(); err != nil {
				return err
			}
			st, err := snapshot.Open(root)
			if err != nil {
				return fmt.Errorf("reopen: %w", err)
			}
			return errors.Join(st.Check(ctx), st.Close())
		}
		return sn, cleanup, nil
	})
}

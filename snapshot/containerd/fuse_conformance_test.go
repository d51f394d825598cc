package containerd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/selfexec"
	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/snapshot"
	ctrdsnap "github.com/stratafs/strata/snapshot/containerd"
)

func TestMain(m *testing.M) {
	selfexec.Main() // the FUSE backend's servers run as this binary
	code := m.Run()
	selfexec.Cleanup()
	os.Exit(code)
}

// TestContainerdConformanceFUSE runs containerd's snapshotter suite
// against a strata store with the FUSE backend: every active snapshot
// with a parent, and every view of two or more layers, is served by a
// FUSE server process. After each case the store is reopened and checked,
// then every mount under it is detached.
func TestContainerdConformanceFUSE(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireFUSE(t)
	testsuite.SnapshotterSuite(t, "strata-fuse", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sn, err := ctrdsnap.Open(root, snapshot.WithBackend(snapshot.BackendFUSE), snapshot.WithServerCommand(selfexec.Command))
		if err != nil {
			return nil, nil, err
		}
		cleanup := func() error {
			if err := sn.Close(); err != nil {
				return err
			}
			st, err := snapshot.Open(root)
			if err != nil {
				return fmt.Errorf("reopen: %w", err)
			}
			err = errors.Join(st.Check(ctx), st.Close())
			for _, mp := range mountsUnder(root) {
				err = errors.Join(err, unix.Unmount(mp, unix.MNT_DETACH))
			}
			return err
		}
		return sn, cleanup, nil
	})
}

// mountsUnder lists mount points at or below root, children first.
func mountsUnder(root string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && (fs[4] == root || strings.HasPrefix(fs[4], root+"/")) {
			out = append(out, fs[4])
		}
	}
	slices.Reverse(out)
	return out
}

package command

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

type checkOptions struct {
	g      *globalOptions
	repair bool
}

func newCheckCommand(g *globalOptions) *cobra.Command {
	o := &checkOptions{g: g}
	cmd := &cobra.Command{
		Use:   "check [--repair]",
		Short: "Check that the store's metadata and dirs agree",
		Long: `Check the store at --root: every snapshot has its dirs, parents and the
children index agree, no orphan dirs, nothing left in staging, no leaked
mounts under the root. Read-only; exit status 7 when problems are found.
With --repair, detach leaked mounts under the root and remove orphan dirs
and staging leftovers (Cleanup), then check again. Repair never touches a
snapshot that the metadata knows.`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd) },
	}
	cmd.Flags().BoolVar(&o.repair, "repair", false, "remove orphans and leaked mounts, then check again")
	return cmd
}

func (o *checkOptions) run(cmd *cobra.Command) error {
	ctx := cmdContext(cmd)
	if o.repair {
		// Detach leaked mounts first, under the shared lock (so that no
		// owner is at work): opening the store for writing clears staging/,
		// and removing a dir tree with a mount inside it would delete
		// through the mount.
		if err := o.g.withStore(true, func(s *snapshot.Store) error {
			detached, err := detachLeakedMounts(s.Root())
			for _, m := range detached {
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "strata: check: detached leaked mount %s\n", m)
			}
			return err
		}); err != nil {
			return err
		}
		if err := o.g.withStore(false, func(s *snapshot.Store) error { return s.Cleanup(ctx) }); err != nil {
			return err
		}
	}
	return o.g.withStore(true, func(s *snapshot.Store) error {
		err := s.Check(ctx)
		if err != nil && !errors.Is(err, snapshot.ErrInconsistent) {
			return err
		}
		if o.g.json() {
			rep := map[string]any{"root": s.Root(), "ok": err == nil}
			if err != nil {
				rep["problems"] = err.Error()
			}
			if jerr := writeJSON(cmd.OutOrStdout(), rep); jerr != nil {
				return jerr
			}
			return err
		}
		if err == nil {
			_, _ = fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", s.Root())
		}
		return err
	})
}

// detachLeakedMounts lazily detaches every mount at or below root, deepest
// first, and returns their mount points. The store leaves no mounts under
// its root but the live FUSE mounts of the FUSE backend; any other is left
// over from a crash.
func detachLeakedMounts(root string) ([]string, error) {
	mps, err := overlay.MountsUnder(root)
	if err != nil {
		return nil, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	var done []string
	for _, mp := range mps {
		// The FUSE backend's live mounts (<root>/mounts/<id>) serve
		// running containers: not leaks. Dead ones (ENOTCONN) go.
		var st unix.Statfs_t
		if strings.HasPrefix(mp, filepath.Join(root, "mounts")+"/") && unix.Statfs(mp, &st) == nil && st.Type == fuseMagic {
			continue
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return done, fmt.Errorf("detach %s: %w", mp, err)
		}
		done = append(done, mp)
	}
	return done, nil
}

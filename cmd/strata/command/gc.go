package command

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/snapshot"
)

type gcOptions struct{ g *globalOptions }

func newGCCommand(g *globalOptions) *cobra.Command {
	o := &gcOptions{g: g}
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove what no snapshot refers to and report the bytes reclaimed",
		Long: `Remove orphan snapshot dirs, work dirs of snapshots that are no longer
active and staging leftovers (the store's Cleanup), and print how many
bytes of allocated space that freed (as du counts them).`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd) },
	}
}

func (o *gcOptions) run(cmd *cobra.Command) error {
	// Measured before the store is opened: opening it already cleans up
	// after crashes (staging, orphans), and that counts as reclaimed too.
	root, err := filepath.Abs(o.g.root)
	if err != nil {
		return err
	}
	before, err := allocatedUnder(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return o.g.withStore(false, func(s *snapshot.Store) error {
		if err := s.Cleanup(cmdContext(cmd)); err != nil {
			return err
		}
		after, err := allocatedUnder(s.Root())
		if err != nil {
			return err
		}
		freed := max(before-after, 0)
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), map[string]int64{"reclaimed": freed})
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "reclaimed %s (%d bytes)\n", humanSize(freed), freed)
		return err
	})
}

// allocatedUnder sums the allocated bytes below the snapshots and staging
// dirs of root (hard links once), without crossing mounts.
func allocatedUnder(root string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return 0, fmt.Errorf("gc: %w", err)
	}
	dev := st.Dev
	seen := map[[2]uint64]bool{}
	var total int64
	for _, d := range []string{"snapshots", "staging"} {
		err := filepath.WalkDir(filepath.Join(root, d), func(p string, e os.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			var s unix.Stat_t
			if err := unix.Lstat(p, &s); err != nil {
				return nil // gone meanwhile
			}
			if s.Dev != dev {
				return filepath.SkipDir
			}
			k := [2]uint64{s.Dev, s.Ino}
			if !seen[k] {
				seen[k] = true
				total += s.Blocks * 512
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("gc: %w", err)
		}
	}
	return total, nil
}

package command

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

type umountOptions struct {
	g *globalOptions
}

func newUmountCommand(g *globalOptions) *cobra.Command {
	o := &umountOptions{g: g}
	return &cobra.Command{
		Use:     "umount TARGET",
		Aliases: []string{"unmount"},
		Short:   "Unmount a strata mount (kernel overlayfs or FUSE)",
		Long: `Unmount the overlay or FUSE mount on TARGET with the backend that made it.
Refuses any other kind of mount.`,
		Args: exactArgs(1, "TARGET"),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, args[0])
		},
	}
}

func (o *umountOptions) run(cmd *cobra.Command, target string) error {
	abs, err := filepath.Abs(target)
	if err != nil {
		return fmt.Errorf("%q: %w", target, err)
	}
	mounted, err := isMountPoint(abs)
	if err != nil {
		return fmt.Errorf("%q: %w", abs, err)
	}
	if !mounted {
		return fmt.Errorf("%q: %w", abs, ErrNotMounted)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(abs, &st); err != nil {
		return fmt.Errorf("%q: %w", abs, err)
	}
	b, ok := backendForMagic(int64(st.Type))
	if !ok {
		return fmt.Errorf("%q: %w (filesystem type %#x)", abs, ErrNotStrataMount, st.Type)
	}
	o.g.debugf(cmd, "unmounting %s with the %s backend", abs, b.Name())
	return b.Unmount(abs)
}

// isMountPoint reports whether dir is the root of a mount: its device
// differs from its parent's, or it is its own parent (/). A bind or
// overlay mount on a directory of the same filesystem has a new device
// number, so this holds for every mount strata makes.
func isMountPoint(dir string) (bool, error) {
	var st, pst unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(dir), &pst); err != nil {
		return false, err
	}
	return st.Dev != pst.Dev || st.Ino == pst.Ino, nil
}

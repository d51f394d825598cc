package command

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/stratafs/strata/overlay"
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
		Long: `Unmount the mount on TARGET with the backend that made it: FUSE mounts with
the FUSE backend, others (overlayfs) with the kernel backend. A TARGET that
is not a mount point is an error (exit status 3). A FUSE mount whose
server is gone (ENOTCONN) is detached.`,
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
	// A FUSE mount whose server died answers everything with ENOTCONN,
	// even the lookups isMountPoint needs: detach it first.
	if cleared, err := clearDeadFUSE(abs); err != nil {
		return err
	} else if cleared {
		o.g.debugf(cmd, "detached dead FUSE mount %s", abs)
		return nil
	}
	mounted, err := isMountPoint(abs)
	if err != nil {
		return fmt.Errorf("%q: %w", abs, pathCause(err))
	}
	if !mounted {
		return fmt.Errorf("%q: %w", abs, ErrNotMounted)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(abs, &st); err != nil {
		return fmt.Errorf("%q: %w", abs, err)
	}
	b := backendForMagic(int64(st.Type))
	o.g.debugf(cmd, "unmounting %s with the %s backend", abs, b.Name())
	return b.Unmount(abs)
}

// isMountPoint reports whether dir is a mount point (after resolving
// symlinks); see overlay.IsMountPoint. A missing dir is an error.
func isMountPoint(dir string) (bool, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false, err
	}
	return overlay.IsMountPoint(real)
}

package command

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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

// isMountPoint reports whether dir (absolute) is a mount point, from
// /proc/self/mountinfo: a bind mount on the same filesystem keeps the
// device number, so comparing stat results with the parent's is not
// enough. A missing dir is an error.
//
// TODO(lead): use overlay's mountinfo parser once it is on main.
func isMountPoint(dir string) (bool, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false, err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root MOUNTPOINT options ...
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountinfo(f[4]) == real {
			return true, nil
		}
	}
	return false, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

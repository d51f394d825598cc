package command

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

// runSnapshot is `strata mount KEY TARGET`: it performs the mounts the
// store gives for KEY (see `strata mounts KEY`).
func (o *mountOptions) runSnapshot(cmd *cobra.Command, key, target string) error {
	target, err := checkDir("target", target, unix.R_OK|unix.X_OK)
	if err != nil {
		return err
	}
	return o.g.withStore(true, func(s *snapshot.Store) error {
		ms, err := s.Mounts(cmdContext(cmd), key)
		if err != nil {
			return err
		}
		if len(ms) != 1 {
			return fmt.Errorf("mount %q: %d mounts; strata mounts one", key, len(ms))
		}
		m := ms[0]
		o.g.debugf(cmd, "snapshot %s: %s", key, mountCommandLine(m, target))
		ro := slices.Contains(m.Options, "ro")
		if m.Type == "bind" && !ro {
			// An active snapshot without parent: its dir, writable.
			if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("mount %q on %q: %w", key, target, err)
			}
			return o.reportSnapshot(cmd, key, target, m)
		}
		var lowers []string
		sopts := []overlay.StackOption{overlay.WithSiblingIndexFiles()}
		var upper, work string
		if m.Type == "bind" {
			lowers = []string{m.Source} // a one-layer stack is a read-only bind
		}
		for _, opt := range m.Options {
			k, v, _ := strings.Cut(opt, "=")
			switch k {
			case "lowerdir":
				if lowers, err = splitLowerdir(v); err != nil {
					return err
				}
			case "upperdir":
				upper = v
			case "workdir":
				work = v
			case "userxattr":
				sopts = append(sopts, overlay.WithUserXattr())
			}
		}
		if upper != "" {
			sopts = append(sopts, overlay.WithUpper(upper, work))
		}
		st, err := overlay.NewStack(lowers, sopts...)
		if err != nil {
			return fmt.Errorf("mount %q: %w", key, err)
		}
		req := MountRequest{
			Stack: st, Target: target, Options: overlay.MountOptions{ReadOnly: ro || st.ReadOnly()},
			Foreground: o.foreground, LogFile: o.logFile,
			Debugf: func(format string, a ...any) { o.g.debugf(cmd, format, a...) },
			Warnf: func(format string, a ...any) {
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "strata: mount: "+format+"\n", a...)
			},
		}
		if _, err := o.mountWith(cmd, req); err != nil {
			return fmt.Errorf("mount %q on %q: %w", key, target, err)
		}
		return o.reportSnapshot(cmd, key, target, m)
	})
}

func (o *mountOptions) reportSnapshot(cmd *cobra.Command, key, target string, m snapshot.Mount) error {
	if o.g.json() {
		return writeJSON(cmd.OutOrStdout(), map[string]any{"key": key, "target": target, "mount": toMountJSON([]snapshot.Mount{m})[0]})
	}
	return nil
}

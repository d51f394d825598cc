package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

type mountOptions struct {
	g          *globalOptions
	options    []string // raw -o values; each a comma-separated list
	foreground bool     // FUSE: serve in this process
	logFile    string   // FUSE: server log
	vfsFlags   string   // FUSE: per-mount flags (nodev,nosuid,...), from fuse-strata
}

func newMountCommand(g *globalOptions) *cobra.Command {
	o := &mountOptions{g: g}
	cmd := &cobra.Command{
		Use:   "mount {-o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPTION...] TARGET | KEY TARGET}",
		Short: "Mount a store snapshot (KEY TARGET) or a stack of plain directories (-o ... TARGET)",
		Long: `Two forms, told apart by -o:

  strata mount KEY TARGET      mount the snapshot KEY of the store at --root
                               (writable if active, read-only otherwise)
  strata mount -o ... TARGET   mount a union of plain directory layers

The store form opens the store read-only and mounts what 'strata mounts
KEY' prints. The plain form takes fuse-overlayfs's and kernel overlayfs's
-o options:

  lowerdir=L1:L2:...  read-only layers, topmost first (':' in a name: '\:')
  upperdir=U          writable layer; without it the mount is read-only
  workdir=W           empty dir on the same filesystem as upperdir
  ro | rw             read-only / read-write (default rw with an upperdir)
  volatile, fsync=0   do not sync the upper layer (fsync=1: default)
  userxattr           overlay metadata in user.overlay.* xattrs
  xino=on|off|auto    inode number scheme (default auto)

-o may be repeated; relative paths are taken against the current
directory. Any other option is refused. --backend picks kernel overlayfs
("kernel"), strata's FUSE server ("fuse") or the kernel where it works
("auto", the default: also FUSE beyond the kernel's 500 lower layers).

A FUSE mount is served by a strata process: by default 'mount' starts one
in the background and exits 0 once the mount is live (or fails with the
server's error); -f keeps it in the foreground. The server logs to --log,
unmounts on SIGTERM/SIGINT and exits when the mount goes ('strata umount').
allow_other and default_permissions are on.`,
		Example: `  strata mount c1 /mnt/c1
  strata mount -o lowerdir=/l/2:/l/1,upperdir=/u,workdir=/w /mnt/c
  strata mount -o lowerdir=img -o ro /mnt/view`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(o.options) > 0 {
				return exactArgs(1, "TARGET")(cmd, args)
			}
			if len(args) != 2 {
				return usagef("want KEY TARGET (a store snapshot) or -o lowerdir=DIR[:DIR...] TARGET (plain dirs), got %d argument(s); see '%s --help'", len(args), cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(o.options) == 0 && len(args) == 0 {
				return completeKeys(g, 1)(cmd, args, toComplete)
			}
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				return o.runSnapshot(cmd, args[0], args[1])
			}
			return o.run(cmd, args[0])
		},
	}
	cmd.Flags().StringArrayVarP(&o.options, "options", "o", nil, "comma-separated mount options (repeatable)")
	cmd.Flags().BoolVarP(&o.foreground, "foreground", "f", false, "FUSE: serve in the foreground until unmounted (default: detach once mounted)")
	cmd.Flags().StringVar(&o.vfsFlags, "vfs-flags", "", "FUSE: per-mount flags nodev,nosuid,noexec,noatime,nodiratime (fuse-strata's -o)")
	_ = cmd.Flags().MarkHidden("vfs-flags")
	cmd.Flags().StringVar(&o.logFile, "log", "", "FUSE: server log file (default "+DefaultLogDir+"/fuse-<target>.log when detached, stderr in the foreground)")
	return cmd
}

// mountSpec is the meaning of a list of -o options.
type mountSpec struct {
	lowers    []string // topmost first
	upper     string
	work      string
	readOnly  bool
	volatile  bool
	userXattr bool
	extra     []string // passed to the backend as is
}

// knownMountOptions lists the -o keys parseMountOptions accepts.
var knownMountOptions = []string{"lowerdir", "upperdir", "workdir", "ro", "rw", "volatile", "fsync", "userxattr", "xino"}

// parseMountOptions reads -o values the way fuse-overlayfs and overlayfs
// do. A layer key given twice, an option with a missing or unexpected
// value, and an unknown option are usage errors.
func parseMountOptions(values []string) (mountSpec, error) {
	var spec mountSpec
	seen := map[string]bool{}
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			if item == "" {
				continue
			}
			key, val, hasVal := strings.Cut(item, "=")
			needVal := func() error {
				if !hasVal || val == "" {
					return usagef("option %q needs a value (%s=...)", key, key)
				}
				return nil
			}
			noVal := func() error {
				if hasVal {
					return usagef("option %q takes no value", key)
				}
				return nil
			}
			once := func() error {
				if seen[key] {
					return usagef("option %q given twice", key)
				}
				seen[key] = true
				return needVal()
			}
			var err error
			switch key {
			case "lowerdir":
				if err = once(); err == nil {
					spec.lowers, err = splitLowerdir(val)
				}
			case "upperdir":
				err = once()
				spec.upper = val
			case "workdir":
				err = once()
				spec.work = val
			case "ro", "rw":
				err = noVal()
				spec.readOnly = key == "ro"
			case "volatile":
				err = noVal()
				spec.volatile = true
			case "fsync": // fuse-overlayfs: fsync=0 is volatile
				if err = needVal(); err == nil {
					switch val {
					case "0":
						spec.volatile = true
					case "1":
						spec.volatile = false
					default:
						err = usagef("option fsync=%q: want 0 or 1", val)
					}
				}
			case "userxattr":
				err = noVal()
				spec.userXattr = true
			case "xino":
				if err = needVal(); err == nil {
					if val != "on" && val != "off" && val != "auto" {
						err = usagef("option xino=%q: want on, off or auto", val)
					}
					spec.extra = append(spec.extra, item)
				}
			default:
				err = usagef("unknown option %q (known: %s)", key, strings.Join(knownMountOptions, ", "))
			}
			if err != nil {
				return mountSpec{}, err
			}
		}
	}
	switch {
	case len(spec.lowers) == 0:
		return mountSpec{}, usagef("no lowerdir: want -o lowerdir=DIR[:DIR...]")
	case spec.upper == "" && spec.work != "":
		return mountSpec{}, usagef("workdir without upperdir")
	case spec.upper != "" && spec.work == "":
		return mountSpec{}, usagef("upperdir without workdir")
	case spec.upper == "" && spec.volatile:
		return mountSpec{}, usagef("volatile needs an upperdir")
	}
	return spec, nil
}

// splitLowerdir splits a lowerdir value on ':' (topmost first); "\:"
// stands for a ':' inside a name, "\\" for a backslash, as in overlayfs.
func splitLowerdir(v string) ([]string, error) {
	var dirs []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && i+1 < len(v):
			i++
			cur.WriteByte(v[i])
		case c == ':':
			dirs = append(dirs, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	dirs = append(dirs, cur.String())
	for _, d := range dirs {
		if d == "" {
			return nil, usagef("lowerdir %q: empty layer name", v)
		}
	}
	return dirs, nil
}

// resolve makes every path in spec absolute and checks that each is a
// directory strata can use, so that errors name the option and the path
// before anything is mounted.
func (spec *mountSpec) resolve() error {
	for i, l := range spec.lowers {
		abs, err := checkDir("lowerdir", l, unix.R_OK|unix.X_OK)
		if err != nil {
			return err
		}
		spec.lowers[i] = abs
	}
	if spec.upper == "" {
		return nil
	}
	var err error
	if spec.upper, err = checkDir("upperdir", spec.upper, unix.R_OK|unix.W_OK|unix.X_OK); err != nil {
		return err
	}
	if spec.work, err = checkDir("workdir", spec.work, unix.R_OK|unix.W_OK|unix.X_OK); err != nil {
		return err
	}
	if spec.upper == spec.work {
		return usagef("upperdir and workdir are the same directory %q", spec.upper)
	}
	var su, sw unix.Stat_t
	if err := unix.Stat(spec.upper, &su); err != nil {
		return fmt.Errorf("upperdir %q: %w", spec.upper, err)
	}
	if err := unix.Stat(spec.work, &sw); err != nil {
		return fmt.Errorf("workdir %q: %w", spec.work, err)
	}
	if su.Dev != sw.Dev {
		return usagef("upperdir %q and workdir %q are on different filesystems", spec.upper, spec.work)
	}
	return nil
}

// checkDir returns p made absolute, or an error "what "p": cause" when p is
// not a directory usable with the access mode.
func checkDir(what, p string, mode uint32) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", what, p, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", what, abs, pathCause(err))
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s %q: %w", what, abs, syscall.ENOTDIR)
	}
	if err := unix.Access(abs, mode); err != nil {
		return "", fmt.Errorf("%s %q: %w", what, abs, err)
	}
	return abs, nil
}

// mountReport is what mount prints with --format json.
type mountReport struct {
	Target   string   `json:"target"`
	Backend  string   `json:"backend"`
	Lowers   []string `json:"lowerdirs"`
	Upper    string   `json:"upperdir,omitempty"`
	Work     string   `json:"workdir,omitempty"`
	ReadOnly bool     `json:"readonly"`
}

func (o *mountOptions) run(cmd *cobra.Command, target string) (err error) {
	// A detached FUSE server reports any failure to the process that
	// started it (fuse_backend.go), whatever step fails.
	ready, err := takeReadyPipe()
	if err != nil {
		return err
	}
	defer func() { _ = ready.report(err) }()
	spec, err := parseMountOptions(o.options)
	if err != nil {
		return err
	}
	vfs, err := parseVFSFlags(o.vfsFlags)
	if err != nil {
		return err
	}
	if vfs != 0 && o.g.backend != "fuse" {
		return usagef("--vfs-flags needs --backend fuse")
	}
	if err := spec.resolve(); err != nil {
		return err
	}
	if target, err = checkDir("target", target, unix.R_OK|unix.X_OK); err != nil {
		return err
	}
	// Committed layers carry their name index next to them (written by
	// the snapshotter at commit); the FUSE backend reads it instead of
	// listing every layer.
	sopts := []overlay.StackOption{overlay.WithSiblingIndexFiles()}
	if spec.upper != "" {
		sopts = append(sopts, overlay.WithUpper(spec.upper, spec.work))
	}
	if spec.userXattr {
		sopts = append(sopts, overlay.WithUserXattr())
	}
	s, err := overlay.NewStack(spec.lowers, sopts...)
	if err != nil {
		return err
	}
	mo := overlay.MountOptions{
		ReadOnly: spec.readOnly || s.ReadOnly(),
		Volatile: spec.volatile,
		Extra:    spec.extra,
	}
	o.g.debugf(cmd, "stack: upper %q work %q lowers %q; options %+v", s.Upper(), s.Work(), s.Lowers(), mo)
	req := MountRequest{
		Stack: s, Target: target, Options: mo,
		Foreground: o.foreground, LogFile: o.logFile, VFSFlags: vfs, ready: ready,
		Debugf: func(format string, a ...any) { o.g.debugf(cmd, format, a...) },
		Warnf: func(format string, a ...any) {
			_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "strata: mount: "+format+"\n", a...)
		},
	}
	b, err := o.mountWith(cmd, req)
	if err != nil {
		return err
	}
	o.g.debugf(cmd, "mounted %s with the %s backend", target, b.Name())
	if o.g.format == "json" {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(mountReport{
			Target: target, Backend: b.Name(), Lowers: s.Lowers(),
			Upper: s.Upper(), Work: s.Work(), ReadOnly: mo.ReadOnly,
		})
	}
	return nil
}

// mountWith mounts with the backend --backend names; "auto" tries the
// kernel and falls back to FUSE only when the kernel cannot serve the
// stack at all. It returns the backend that mounted.
func (o *mountOptions) mountWith(cmd *cobra.Command, req MountRequest) (Backend, error) {
	if o.g.backend != "auto" {
		b := backends[o.g.backend]
		return b, b.Mount(req)
	}
	kernel, fuse := backends["kernel"], backends["fuse"]
	kerr := kernel.Mount(req)
	if kerr == nil || !kernelCannot(kerr) {
		return kernel, kerr
	}
	o.g.debugf(cmd, "kernel backend cannot mount (%v); trying fuse", kerr)
	ferr := fuse.Mount(req)
	switch {
	case ferr == nil:
		return fuse, nil
	case errors.Is(ferr, ErrBackendNotBuilt):
		o.g.debugf(cmd, "fuse: %v", ferr)
		return kernel, kerr
	}
	return fuse, fmt.Errorf("kernel backend: %v; fuse backend: %w", kerr, ferr)
}

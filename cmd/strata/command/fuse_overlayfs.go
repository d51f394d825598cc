package command

import (
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// FuseOverlayfsName is the program name under which strata acts as a
// drop-in for fuse-overlayfs (a symlink fuse-strata -> strata): it takes
// fuse-overlayfs's command line, as containers/storage's mount_program
// passes it, and mounts with the FUSE backend.
const FuseOverlayfsName = "fuse-strata"

// fuseOverlayfsUsage is the help of the fuse-strata form.
const fuseOverlayfsUsage = `usage: fuse-strata [-f] [-d|--debug] -o lowerdir=L1[:L2...][,upperdir=U,workdir=W][,OPTION...] MOUNTPOINT

strata's FUSE overlay server with fuse-overlayfs's command line. Detaches
once the mount is live unless -f (foreground) or -d/--debug (foreground,
debug). Unmount with 'strata umount MOUNTPOINT', umount(8) or fusermount3 -u.

Options honoured: lowerdir, upperdir, workdir, ro, rw, volatile, fsync=0|1,
userxattr, allow_other and default_permissions (always on), nodev, nosuid,
noexec, noatime, nodiratime, relatime, dev, suid, exec.
Options of fuse-overlayfs that strata does not implement (uidmapping,
gidmapping, squash_to_root, squash_to_uid, squash_to_gid, static_nlink,
noacl, plugins, xattr_permissions, context, ...) are refused.
`

// Options passed through to `strata mount -o`.
var fuseOverlayfsPass = map[string]bool{
	"lowerdir": true, "upperdir": true, "workdir": true,
	"ro": true, "rw": true, "volatile": true, "fsync": true, "userxattr": true,
}

// Per-mount flags fuse-strata sets with a bind remount after mounting;
// the positive forms are the default and accepted as no-ops.
var fuseVFSFlags = map[string]uintptr{
	"nodev": unix.MS_NODEV, "nosuid": unix.MS_NOSUID, "noexec": unix.MS_NOEXEC,
	"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME,
}

// Accepted because strata does them anyway.
var fuseOverlayfsNoop = map[string]bool{
	"allow_other": true, "default_permissions": true,
	"dev": true, "suid": true, "exec": true, "relatime": true,
}

// FuseOverlayfsMain runs strata as fuse-strata with fuse-overlayfs's
// arguments (args excludes the program name) and returns the exit status.
func FuseOverlayfsMain(args []string, stdout, stderr io.Writer) int {
	sargs, err := fuseOverlayfsArgs(args)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: %v\n", FuseOverlayfsName, err)
		return ExitCode(err)
	}
	if sargs == nil { // --help
		_, _ = io.WriteString(stdout, fuseOverlayfsUsage)
		return ExitOK
	}
	return Main(sargs, stdout, stderr)
}

// fuseOverlayfsArgs translates fuse-overlayfs's argv into strata's; nil
// without error means help was asked for.
func fuseOverlayfsArgs(args []string) ([]string, error) {
	var (
		opts                []string
		vfs                 []string
		foreground, debug   bool
		target              string
		haveTarget, optsEnd bool
	)
	addOpts := func(v string) error {
		for _, item := range strings.Split(v, ",") {
			if item == "" {
				continue
			}
			key, _, _ := strings.Cut(item, "=")
			switch {
			case fuseOverlayfsPass[key]:
				opts = append(opts, item)
			case fuseVFSFlags[key] != 0:
				vfs = append(vfs, key)
			case fuseOverlayfsNoop[key]:
			case key == "uidmapping" || key == "gidmapping" || strings.HasPrefix(key, "squash_to_"):
				return usagef("option %q: id mapping and squashing are not implemented by strata; use an idmapped mount or a user namespace instead", key)
			default:
				return usagef("option %q is not implemented by strata (see %s --help)", key, FuseOverlayfsName)
			}
		}
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case optsEnd || !strings.HasPrefix(a, "-") || a == "-":
			if haveTarget {
				return nil, usagef("want one MOUNTPOINT, got %q and %q", target, a)
			}
			target, haveTarget = a, true
		case a == "--":
			optsEnd = true
		case a == "-h" || a == "--help":
			return nil, nil
		case a == "-f":
			foreground = true
		case a == "-V" || a == "--version":
			return []string{"--version"}, nil
		case a == "-d" || a == "--debug" || a == "-odebug":
			foreground, debug = true, true
		case a == "-s": // single-threaded: harmless, the server picks its own parallelism
		case a == "-o":
			if i+1 >= len(args) {
				return nil, usagef("-o needs a value")
			}
			i++
			if err := addOpts(args[i]); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-o"):
			if err := addOpts(a[2:]); err != nil {
				return nil, err
			}
		default:
			return nil, usagef("unknown flag %q (see %s --help)", a, FuseOverlayfsName)
		}
	}
	if !haveTarget {
		return nil, usagef("no MOUNTPOINT (see %s --help)", FuseOverlayfsName)
	}
	out := []string{"--backend", "fuse"}
	if debug {
		out = append(out, "--debug")
	}
	out = append(out, "mount")
	if foreground {
		out = append(out, "--foreground")
	}
	if len(vfs) > 0 {
		out = append(out, "--vfs-flags", strings.Join(vfs, ","))
	}
	if len(opts) > 0 {
		out = append(out, "-o", strings.Join(opts, ","))
	}
	return append(out, "--", target), nil
}

// parseVFSFlags turns a --vfs-flags list into mount flags.
func parseVFSFlags(v string) (uintptr, error) {
	var flags uintptr
	for _, f := range strings.Split(v, ",") {
		if f == "" {
			continue
		}
		fl, ok := fuseVFSFlags[f]
		if !ok {
			return 0, usagef("--vfs-flags: unknown flag %q (known: nodev, nosuid, noexec, noatime, nodiratime)", f)
		}
		flags |= fl
	}
	return flags, nil
}

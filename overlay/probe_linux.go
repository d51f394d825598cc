package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Features are the kernel overlayfs abilities strata depends on, found by
// trying them (Probe), never by kernel version.
type Features struct {
	// NewMountAPI: fsopen/fsconfig/fsmount/move_mount work for overlay.
	NewMountAPI bool
	// LowerdirPlus: fsconfig takes one "lowerdir+" per layer (6.8+), so
	// long chains escape the 4 KiB limit of mount(2) options.
	LowerdirPlus bool
	// LayerFD: fsconfig takes lowerdir+, upperdir and workdir as file
	// descriptors (FSCONFIG_SET_FD, 6.13+), so a layer path may exceed
	// fsconfig's 255-byte string limit.
	LayerFD bool
	// UserXattr: the userxattr option (user.overlay.* metadata) mounts.
	UserXattr bool
	// RedirectDir: redirect_dir=on mounts and stays on.
	RedirectDir bool
	// Metacopy: metacopy=on mounts and stays on.
	Metacopy bool
	// Index: index=off mounts (the option is known).
	Index bool
	// Volatile: the volatile option mounts.
	Volatile bool
	// Xino: xino=auto mounts.
	Xino bool
	// PageSize bounds mount(2)'s option string.
	PageSize int
	// Notes say why each missing feature is missing, one line each.
	Notes []string

	// layerFDRead: FSCONFIG_SET_FD refuses O_PATH fds; use O_RDONLY.
	layerFDRead bool
}

// String lists the features as "name=yes|no" words, e.g. for
// `strata version`.
func (f Features) String() string {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	return fmt.Sprintf("new-mount-api=%s lowerdir+=%s layer-fd=%s userxattr=%s redirect_dir=%s metacopy=%s index=%s volatile=%s xino=%s",
		yn(f.NewMountAPI), yn(f.LowerdirPlus), yn(f.LayerFD), yn(f.UserXattr), yn(f.RedirectDir),
		yn(f.Metacopy), yn(f.Index), yn(f.Volatile), yn(f.Xino))
}

// supports says whether the kernel has the overlay option opt; known is
// false for options Probe does not test.
func (f Features) supports(opt string) (ok, known bool) {
	switch opt {
	case "redirect_dir=on":
		return f.RedirectDir, true
	case "metacopy=on":
		return f.Metacopy, true
	case "index=off":
		return f.Index, true
	case "xino=auto":
		return f.Xino, true
	case "userxattr":
		return f.UserXattr, true
	case "volatile":
		return f.Volatile, true
	}
	return false, false
}

func (f Features) pageSize() int {
	if f.PageSize > 0 {
		return f.PageSize
	}
	return os.Getpagesize()
}

var probeCache struct {
	mu    sync.Mutex // held while probing, so concurrent callers wait
	done  bool       // guarded by mu
	feats Features   // guarded by mu; valid when done
}

// Probe finds the kernel's overlayfs features by tiny real mounts in a
// temporary dir (os.TempDir), once per process: a successful result is
// cached, a failed probe is retried on the next call. It needs the
// privilege to mount. The option features (redirect_dir, metacopy,
// userxattr, ...) hold for the temp dir's filesystem; use ProbeDir for the
// filesystem the layers live on.
func Probe() (Features, error) {
	probeCache.mu.Lock()
	defer probeCache.mu.Unlock()
	if probeCache.done {
		return probeCache.feats, nil
	}
	dir, err := os.MkdirTemp("", "strata-probe-")
	if err != nil {
		return Features{}, fmt.Errorf("overlay: probe: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }() // best effort: a temp dir
	f, err := probeIn(dir)
	if err != nil {
		return f, err
	}
	probeCache.feats, probeCache.done = f, true
	return f, nil
}

// ProbeDir probes like Probe, uncached, with its scratch dirs under dir,
// so that the option features hold for dir's filesystem.
func ProbeDir(dir string) (Features, error) {
	tmp, err := os.MkdirTemp(dir, ".strata-probe-")
	if err != nil {
		return Features{}, fmt.Errorf("overlay: probe: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best effort: a temp dir
	return probeIn(tmp)
}

// probeIn runs the probes with scratch dirs in dir and leaves no mount
// behind.
func probeIn(dir string) (Features, error) {
	f := Features{PageSize: os.Getpagesize()}
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return f, fmt.Errorf("overlay: probe: %w", err)
	}
	mk := func(name string) (string, error) {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			return "", fmt.Errorf("overlay: probe: %w", err)
		}
		return p, nil
	}
	lower, err := mk("lower")
	if err != nil {
		return f, err
	}
	target, err := mk("mnt")
	if err != nil {
		return f, err
	}

	// The new mount API: fsconfig validates each parameter as it is set,
	// so lowerdir+ and FSCONFIG_SET_FD are tested without mounting.
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	switch {
	case err == nil:
		f.NewMountAPI = true
		f.LowerdirPlus = unix.FsconfigSetString(fsfd, "lowerdir+", lower) == nil
		closeFD(fsfd)
		if !f.LowerdirPlus {
			f.Notes = append(f.Notes, "lowerdir+: not accepted by fsconfig (kernel before 6.8?)")
		}
	case errors.Is(err, unix.ENOSYS):
		f.Notes = append(f.Notes, "new mount API: fsopen: "+err.Error())
	case errors.Is(err, unix.ENODEV):
		return f, fmt.Errorf("overlay: probe: fsopen overlay: %w: overlay filesystem not available (%w)", ErrNotSupported, err)
	default:
		return f, fmt.Errorf("overlay: probe: fsopen overlay: %w", err)
	}
	if f.LowerdirPlus {
		if err := probeLayerFD(&f, dir, lower); err != nil {
			f.Notes = append(f.Notes, "layer fds (FSCONFIG_SET_FD): "+err.Error())
		}
	}

	// Options: a real mount each, then read back what the kernel runs with.
	opts := []struct {
		opt  string
		flag *bool
	}{
		{"index=off", &f.Index},
		{"redirect_dir=on", &f.RedirectDir},
		{"metacopy=on", &f.Metacopy},
		{"xino=auto", &f.Xino},
		{"volatile", &f.Volatile},
		{"userxattr", &f.UserXattr},
	}
	api := Features{NewMountAPI: f.NewMountAPI, LowerdirPlus: f.LowerdirPlus, PageSize: f.PageSize}
	for i, o := range opts {
		ok, why, err := probeOption(dir, i, lower, target, o.opt, api)
		if err != nil {
			return f, err
		}
		*o.flag = ok
		if !ok {
			f.Notes = append(f.Notes, o.opt+": "+why)
		}
	}
	return f, nil
}

// probeLayerFD configures an overlay whose every layer is a file
// descriptor and creates (but never attaches) it.
func probeLayerFD(f *Features, dir, lower string) error {
	upper := filepath.Join(dir, "fd-upper")
	work := filepath.Join(dir, "fd-work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	try := func(read bool) error {
		fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
		if err != nil {
			return err
		}
		defer closeFD(fsfd)
		for _, kv := range [][2]string{{"lowerdir+", lower}, {"upperdir", upper}, {"workdir", work}} {
			fd, err := openLayerFD(kv[1], read)
			if err != nil {
				return err
			}
			err = unix.FsconfigSetFd(fsfd, kv[0], fd)
			closeFD(fd)
			if err != nil {
				return fmt.Errorf("%s: %w%s", kv[0], err, kernelSays(readFsLog(fsfd)))
			}
		}
		if err := unix.FsconfigCreate(fsfd); err != nil {
			return fmt.Errorf("create: %w%s", err, kernelSays(readFsLog(fsfd)))
		}
		// A detached mount: closing its fd unmounts it.
		mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("fsmount: %w", err)
		}
		closeFD(mfd)
		return nil
	}
	err := try(false)
	if errors.Is(err, unix.EBADF) {
		// Kernels whose fsconfig fget()s the fd refuse O_PATH.
		if err = try(true); err == nil {
			f.layerFDRead = true
		}
	}
	if err != nil {
		return err
	}
	f.LayerFD = true
	return nil
}

// probeOption mounts lower with a fresh upper and opt on target, checks
// the option is in effect, and unmounts. ok false with why is a missing
// feature; err is a probe that could not clean up.
func probeOption(dir string, i int, lower, target, opt string, api Features) (ok bool, why string, err error) {
	upper := filepath.Join(dir, fmt.Sprintf("upper%d", i))
	work := filepath.Join(dir, fmt.Sprintf("work%d", i))
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return false, "", fmt.Errorf("overlay: probe: %w", err)
		}
	}
	p := &plan{target: target, lowers: []string{lower}, upper: upper, work: work, opts: []string{opt}}
	var merr error
	if api.NewMountAPI && api.LowerdirPlus {
		_, merr = mountFsmount(p, api)
	} else {
		merr = mountLegacy(p, api.pageSize())
	}
	if merr != nil {
		return false, merr.Error(), nil
	}
	why = checkOption(target, opt)
	if err := unmountNow(target, 0); err != nil {
		if derr := unmountNow(target, unix.MNT_DETACH); derr != nil {
			return false, "", fmt.Errorf("overlay: probe: unmount %s: %w (detach: %v)", target, err, derr)
		}
	}
	return why == "", why, nil
}

// checkOption says why opt is not in effect on the overlay at target, or
// "" when it is.
func checkOption(target, opt string) string {
	entries, err := readMountinfo()
	if err != nil {
		return err.Error()
	}
	e := lastMountAt(entries, target)
	if e == nil || e.FSType != "overlay" {
		return "mounted, but not found in /proc/self/mountinfo"
	}
	key, want, hasVal := strings.Cut(opt, "=")
	switch {
	case key == "redirect_dir" || key == "metacopy" || key == "index":
		if got, known := effectiveOption(e, key); known && got != want {
			return fmt.Sprintf("mounted, but the kernel runs with %s=%s", key, got)
		}
	case opt == "volatile":
		// Newer kernels show it as fsync=volatile.
		if v, _ := e.lastOption("fsync"); !e.hasFlag(key) && v != "volatile" {
			return "mounted, but the option is not shown in mountinfo"
		}
	case !hasVal && key == "userxattr":
		if !e.hasFlag(key) {
			return "mounted, but the option is not shown in mountinfo"
		}
	}
	return ""
}

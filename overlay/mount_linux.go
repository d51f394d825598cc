package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// MaxKernelLowers is the most lower layers kernel overlayfs accepts
// (OVL_MAX_STACK). The kernel refuses the next one with a bare EINVAL, so
// Mount checks the count itself, before any system call.
const MaxKernelLowers = 500

// maxFsconfigString is the longest string value fsconfig(2) takes: the
// kernel copies at most 256 bytes including the NUL and refuses longer
// values with EINVAL.
const maxFsconfigString = 255

// MountOptions tune a kernel overlayfs mount of a Stack.
type MountOptions struct {
	// ReadOnly mounts read-only even when the stack has an upper layer
	// (MOUNT_ATTR_RDONLY on the new mount, MS_RDONLY with mount(2)).
	ReadOnly bool
	// Volatile skips syncing the upper layer (kernel "volatile"). Ignored,
	// with a note in the result, for a stack without an upper layer.
	Volatile bool
	// Extra holds further raw overlay options, e.g. "xino=off", passed as
	// they are ("key" as a flag, "key=value" as a string).
	Extra []string
	// StrictFormat makes Mount fail with ErrNotSupported instead of
	// mounting without a format option of FormatOptions (redirect_dir=on,
	// metacopy=on, index=off, xino=auto) that the kernel lacks or turned
	// off. Without it such options are dropped and listed in
	// MountResult.Dropped.
	StrictFormat bool
	// Features, when set, replaces Probe's result, e.g. with ProbeDir's
	// for the filesystem the layers live on.
	Features *Features
}

// MountResult says how a stack was mounted.
type MountResult struct {
	// Target is the absolute, symlink-free mount point.
	Target string
	// Method is "fsmount" (fsopen/fsconfig/fsmount/move_mount), "mount(2)"
	// (the legacy option string), "open_tree" (a bind mount made with the
	// new API) or "bind" (MS_BIND, then a read-only remount).
	Method string
	// Options are the overlay options used besides the layer paths, in
	// the order given to the kernel. Empty for bind mounts.
	Options []string
	// Dropped lists the options of FormatOptions that are not in effect,
	// because Probe found them unsupported or the kernel turned them off
	// while mounting (e.g. an upper fs without xattr support).
	Dropped []string
	// Notes holds the kernel's fs_context messages and strata's remarks
	// on dropped or ignored options, one line each.
	Notes []string
}

// FormatOptions returns the overlay options that fix strata's on-disk
// format (see ../shared/DESIGN.md): redirect_dir=on, metacopy=on,
// index=off, xino=auto, and userxattr when the stack uses it.
func FormatOptions(f Format) []string {
	if f.UserXattr {
		// The kernel refuses redirect_dir=on and metacopy=on with userxattr.
		return []string{"userxattr", "index=off", "xino=auto"}
	}
	return []string{"redirect_dir=on", "metacopy=on", "index=off", "xino=auto"}
}

// Mount mounts s on target with kernel overlayfs. See MountStack.
func Mount(s *Stack, target string, o MountOptions) error {
	_, err := MountStack(s, target, o)
	return err
}

// MountStack mounts s on target and reports how.
//
// A stack with upper and lowers, or with two or more lowers, is mounted as
// overlayfs: with the new mount API (one "lowerdir+" per layer, so the
// 4 KiB limit of mount(2)'s option string does not apply; paths longer
// than fsconfig's 255 bytes are passed as file descriptors) when Probe
// finds it, else with mount(2). A stack of one lower and no upper — which
// overlayfs refuses — is a read-only bind mount of that layer; a stack of
// only an upper is a bind mount of the upper.
//
// Errors: more than MaxKernelLowers lowers wrap ErrTooManyLayers (checked
// before any system call); an upper or work dir already used by another
// overlay mount wraps ErrInUse; a missing layer or target wraps
// fs.ErrNotExist and names the path; a target that is not a directory
// wraps unix.ENOTDIR; a kernel lacking a needed feature wraps
// ErrNotSupported. Kernel log messages are part of the error text.
func MountStack(s *Stack, target string, o MountOptions) (*MountResult, error) {
	if n := len(s.lowers); n > MaxKernelLowers {
		return nil, fmt.Errorf("overlay: mount %s: %d lower layers: %w: the limit is %d; mount this chain with the FUSE backend (--backend fuse) or flatten it into fewer layers",
			target, n, ErrTooManyLayers, MaxKernelLowers)
	}
	abs, err := checkTarget(target)
	if err != nil {
		return nil, err
	}
	if o.Features != nil {
		return mountStack(s, abs, o, *o.Features)
	}
	feats, err := Probe()
	if err != nil {
		return nil, fmt.Errorf("%w (while mounting %s)", err, abs)
	}
	return mountStack(s, abs, o, feats)
}

// checkTarget returns target absolute and with symlinks resolved (as
// mountinfo shows it), or a one-line error.
func checkTarget(target string) (string, error) {
	abs, err := filepath.Abs(target)
	if err != nil {
		return "", fmt.Errorf("overlay: mount target %s: %w", target, err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("overlay: mount target %s: %w", abs, unwrapPathError(err))
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return "", fmt.Errorf("overlay: mount target %s: %w", resolved, unwrapPathError(err))
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("overlay: mount target %s: %w", resolved, unix.ENOTDIR)
	}
	return resolved, nil
}

// unwrapPathError drops the *fs.PathError around an errno, whose text
// would repeat the path the caller already names.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// plan is one resolved overlay mount.
type plan struct {
	target   string
	lowers   []string // topmost first
	upper    string
	work     string
	opts     []string // "key" or "key=value"
	readOnly bool
}

// mountStack does MountStack's work with the given kernel features (tests
// force fallbacks through it).
func mountStack(s *Stack, target string, o MountOptions, feats Features) (*MountResult, error) {
	res := &MountResult{Target: target}
	switch {
	case s.upper == "" && len(s.lowers) == 1:
		// overlayfs refuses a single lower without upper; a read-only bind
		// mount shows the same tree.
		m, err := bindMount(s.lowers[0], target, true, feats)
		if err != nil {
			return nil, fmt.Errorf("overlay: mount %s: read-only bind of %s: %w", target, s.lowers[0], err)
		}
		res.Method = m
		return res, nil
	case len(s.lowers) == 0:
		m, err := bindMount(s.upper, target, o.ReadOnly, feats)
		if err != nil {
			return nil, fmt.Errorf("overlay: mount %s: bind of upper %s: %w", target, s.upper, err)
		}
		res.Method = m
		return res, nil
	}

	p := &plan{target: target, lowers: s.lowers, upper: s.upper, work: s.work, readOnly: o.ReadOnly}
	if p.upper != "" {
		// Claim upper and work in this process first, so two concurrent
		// Mounts cannot both pass the mountinfo check below. (Another
		// process can still race us; the kernel would only warn.)
		release, err := claimDirs(p.upper, p.work)
		if err != nil {
			return nil, fmt.Errorf("overlay: mount %s: %w", target, err)
		}
		defer release()
		entries, err := readMountinfo()
		if err != nil {
			return nil, fmt.Errorf("overlay: mount %s: %w", target, err)
		}
		if use, dir := findOverlayUse(entries, p.upper, p.work); use != nil {
			role := "upperdir"
			if dir == p.work {
				role = "workdir"
			}
			return nil, fmt.Errorf("overlay: mount %s: %s %s: %w (it is the %s of the overlay mounted on %s)",
				target, role, dir, ErrInUse, use.key, use.entry.MountPoint)
		}
	}

	// Format options, each only where the kernel has it.
	for _, opt := range FormatOptions(s.format) {
		ok, known := feats.supports(opt)
		switch {
		case ok || !known:
			p.opts = append(p.opts, opt)
		case opt == "userxattr":
			// The layers' metadata is in user.overlay.*; without userxattr
			// the kernel would ignore it. Never drop it.
			return nil, fmt.Errorf("overlay: mount %s: option userxattr: %w", target, ErrNotSupported)
		case o.StrictFormat:
			return nil, fmt.Errorf("overlay: mount %s: format option %s: %w", target, opt, ErrNotSupported)
		default:
			res.Dropped = append(res.Dropped, opt)
			res.Notes = append(res.Notes, "strata: "+opt+" dropped: not supported by this kernel")
		}
	}
	if o.Volatile {
		switch {
		case p.upper == "":
			res.Notes = append(res.Notes, "strata: volatile ignored: the stack has no upper layer")
		case !feats.Volatile:
			return nil, fmt.Errorf("overlay: mount %s: option volatile: %w", target, ErrNotSupported)
		default:
			p.opts = append(p.opts, "volatile")
		}
	}
	p.opts = append(p.opts, o.Extra...)
	res.Options = slices.Clone(p.opts)

	var notes []string
	var err error
	if feats.NewMountAPI && feats.LowerdirPlus {
		res.Method = "fsmount"
		notes, err = mountFsmount(p, feats)
	} else {
		res.Method = "mount(2)"
		err = mountLegacy(p, feats.pageSize())
	}
	res.Notes = append(res.Notes, notes...)
	if err != nil {
		return nil, fmt.Errorf("overlay: mount %s: %w", target, err)
	}

	// Read back what the kernel runs with: it turns redirect_dir and
	// metacopy off, with only a dmesg line, e.g. when the upper fs lacks
	// xattrs. Rendering mountinfo costs more than the mount itself for
	// long chains (the kernel prints every layer path), and the outcome
	// depends on the upper fs and the options only, so it is checked once
	// per upper filesystem and option set while it keeps coming out clean.
	key := formatKey(p)
	if _, done := verifiedFormat.Load(key); !done {
		if err := verifyFormat(p, res, o.StrictFormat); err != nil {
			if uerr := unmountNow(target, unix.MNT_DETACH); uerr != nil {
				err = fmt.Errorf("%w; and unmounting it again failed: %v", err, uerr)
			}
			return nil, err
		}
		if len(res.Dropped) == 0 {
			verifiedFormat.Store(key, true)
		}
	}
	return res, nil
}

// verifiedFormat holds the formatKeys whose mounts were read back with all
// format options in effect.
var verifiedFormat sync.Map

type formatCheck struct {
	upperDev uint64 // 0 without upper
	hasUpper bool
	opts     string
}

func formatKey(p *plan) formatCheck {
	k := formatCheck{opts: strings.Join(p.opts, ",")}
	if p.upper != "" {
		var st unix.Stat_t
		if err := unix.Stat(p.upper, &st); err == nil {
			k.upperDev, k.hasUpper = st.Dev, true
		} else {
			k.opts = "unverifiable:" + k.opts // never matches a stored key
		}
	}
	return k
}

// mounting holds the upper and work dirs of overlay mounts in progress in
// this process.
var mounting struct {
	mu   sync.Mutex
	dirs map[string]bool // guarded by mu
}

// claimDirs marks dirs as being mounted, or fails with ErrInUse naming the
// one another Mount of this process is mounting right now.
func claimDirs(dirs ...string) (release func(), err error) {
	mounting.mu.Lock()
	defer mounting.mu.Unlock()
	for _, d := range dirs {
		if mounting.dirs[d] {
			return nil, fmt.Errorf("%s: %w (another Mount of this process is mounting it now)", d, ErrInUse)
		}
	}
	if mounting.dirs == nil {
		mounting.dirs = make(map[string]bool)
	}
	for _, d := range dirs {
		mounting.dirs[d] = true
	}
	return func() {
		mounting.mu.Lock()
		defer mounting.mu.Unlock()
		for _, d := range dirs {
			delete(mounting.dirs, d)
		}
	}, nil
}

// verifyFormat checks the format options of p against the mount now on
// p.target, recording or (strict) refusing the ones not in effect.
func verifyFormat(p *plan, res *MountResult, strict bool) error {
	entries, err := readMountinfo()
	if err != nil {
		return fmt.Errorf("overlay: mount %s: %w", p.target, err)
	}
	e := lastMountAt(entries, p.target)
	if e == nil || e.FSType != "overlay" {
		return fmt.Errorf("overlay: mount %s: mounted, but no overlay mount at the target in /proc/self/mountinfo", p.target)
	}
	for _, opt := range p.opts {
		key, want, ok := strings.Cut(opt, "=")
		if !ok || (key != "redirect_dir" && key != "metacopy" && key != "index") {
			continue
		}
		got, known := effectiveOption(e, key)
		if !known || got == want {
			continue
		}
		if strict {
			return fmt.Errorf("overlay: mount %s: format option %s: %w: the kernel mounted with %s=%s (see dmesg)",
				p.target, opt, ErrNotSupported, key, got)
		}
		res.Dropped = append(res.Dropped, opt)
		res.Notes = append(res.Notes, fmt.Sprintf("strata: %s not in effect: the kernel mounted with %s=%s (see dmesg)", opt, key, got))
	}
	return nil
}

// mountFsmount mounts p with fsopen/fsconfig/fsmount/move_mount and
// returns the kernel's messages from the fs_context.
func mountFsmount(p *plan, feats Features) ([]string, error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen overlay: %w", err)
	}
	defer closeFD(fsfd)

	// A path over fsconfig's 255 bytes goes in as a file descriptor when
	// the kernel takes layers that way (6.13+); else, from a thread with
	// its own cwd, as a name relative to its parent dir.
	private := false
	for _, l := range p.layerPaths() {
		if len(l) > maxFsconfigString && !feats.LayerFD {
			private = true
		}
	}
	setPath := func(chdir func(string) error, key, path string) error {
		var err error
		switch {
		case len(path) <= maxFsconfigString && (!feats.LayerFD || !strings.ContainsRune(path, '\\')):
			err = unix.FsconfigSetString(fsfd, key, path)
		case feats.LayerFD:
			var fd int
			fd, err = openLayerFD(path, feats.layerFDRead)
			if err == nil {
				err = unix.FsconfigSetFd(fsfd, key, fd)
				closeFD(fd)
			}
		case chdir != nil:
			if err = chdir(filepath.Dir(path)); err == nil {
				err = unix.FsconfigSetString(fsfd, key, filepath.Base(path))
			}
		default:
			err = unix.EINVAL
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w%s", key, path, err, kernelSays(readFsLog(fsfd)))
		}
		return nil
	}
	configure := func(chdir func(string) error) error {
		for _, l := range p.lowers {
			if err := setPath(chdir, "lowerdir+", l); err != nil {
				return err
			}
		}
		if p.upper != "" {
			if err := setPath(chdir, "upperdir", p.upper); err != nil {
				return err
			}
			if err := setPath(chdir, "workdir", p.work); err != nil {
				return err
			}
		}
		for _, opt := range p.opts {
			var err error
			if k, v, ok := strings.Cut(opt, "="); ok {
				err = unix.FsconfigSetString(fsfd, k, v)
			} else {
				err = unix.FsconfigSetFlag(fsfd, opt)
			}
			if err != nil {
				return fmt.Errorf("option %s: %w%s", opt, err, kernelSays(readFsLog(fsfd)))
			}
		}
		if err := unix.FsconfigCreate(fsfd); err != nil {
			return fmt.Errorf("fsconfig create: %w%s", err, kernelSays(readFsLog(fsfd)))
		}
		return nil
	}
	if private {
		err = inPrivateFS(configure)
	} else {
		err = configure(nil)
	}
	if err != nil {
		return nil, err
	}
	var attr int
	if p.readOnly {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return nil, fmt.Errorf("fsmount: %w%s", err, kernelSays(readFsLog(fsfd)))
	}
	err = unix.MoveMount(mfd, "", unix.AT_FDCWD, p.target, unix.MOVE_MOUNT_F_EMPTY_PATH)
	// The mount fd pins the mount: close it before anyone may unmount.
	closeFD(mfd)
	if err != nil {
		return nil, fmt.Errorf("move_mount: %w", err)
	}
	return readFsLog(fsfd), nil
}

func (p *plan) layerPaths() []string {
	out := slices.Clone(p.lowers)
	if p.upper != "" {
		out = append(out, p.upper, p.work)
	}
	return out
}

// openLayerFD opens dir for FSCONFIG_SET_FD: O_PATH where the kernel takes
// it, else a read-only directory fd.
func openLayerFD(dir string, read bool) (int, error) {
	flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
	if read {
		flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	}
	return unix.Open(dir, flags, 0)
}

// readFsLog drains the messages the kernel queued on an fs_context fd
// ("e ..." errors, "w ..." warnings, "i ..." info), one line each.
func readFsLog(fd int) []string {
	var msgs []string
	buf := make([]byte, 4096)
	for range 64 { // the kernel keeps at most 8; bound the loop anyway
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		m := strings.Join(strings.Fields(string(buf[:n])), " ")
		switch {
		case strings.HasPrefix(m, "e "):
			m = m[2:]
		case strings.HasPrefix(m, "w "):
			m = "warning: " + m[2:]
		case strings.HasPrefix(m, "i "):
			m = "info: " + m[2:]
		}
		msgs = append(msgs, "kernel: "+m)
	}
	return msgs
}

// kernelSays formats kernel messages as an error suffix.
func kernelSays(msgs []string) string {
	if len(msgs) == 0 {
		return ""
	}
	return " (" + strings.Join(msgs, "; ") + ")"
}

// mountLegacy mounts p with mount(2) and one option string.
//
// mount(2) copies at most one page of options. When the string with
// absolute paths does not fit, the lower dirs are given relative to their
// common parent dir, from a thread whose cwd is that dir (inPrivateFS);
// the upper and work dirs stay absolute, so /proc/self/mountinfo still
// names them for in-use checks, unless they too must be shortened.
func mountLegacy(p *plan, pageSize int) error {
	var flags uintptr
	if p.readOnly {
		flags |= unix.MS_RDONLY
	}
	data := legacyData(p.lowers, p.upper, p.work, p.opts)
	if len(data) < pageSize {
		return legacyErr(p, unix.Mount("overlay", p.target, "overlay", flags, data))
	}
	parent := commonDir(p.lowers)
	data = legacyData(relTo(parent, p.lowers), p.upper, p.work, p.opts)
	if len(data) >= pageSize && p.upper != "" {
		parent = commonDir(p.layerPaths())
		data = legacyData(relTo(parent, p.lowers), relOne(parent, p.upper), relOne(parent, p.work), p.opts)
	}
	if len(data) >= pageSize {
		return fmt.Errorf("%w: the mount(2) option string needs %d bytes even with paths relative to %s, over the page size (%d), and this kernel lacks the new mount API (lowerdir+); use the FUSE backend (--backend fuse) or flatten the chain",
			ErrNotSupported, len(data), parent, pageSize)
	}
	err := inPrivateFS(func(chdir func(string) error) error {
		if err := chdir(parent); err != nil {
			return fmt.Errorf("chdir %s: %w", parent, err)
		}
		return unix.Mount("overlay", p.target, "overlay", flags, data)
	})
	return legacyErr(p, err)
}

// legacyErr names the missing layer when mount(2) says ENOENT.
func legacyErr(p *plan, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.ENOENT) {
		for _, d := range p.layerPaths() {
			if _, serr := os.Stat(d); serr != nil {
				return fmt.Errorf("mount(2): layer %s: %w", d, unwrapPathError(serr))
			}
		}
	}
	return fmt.Errorf("mount(2): %w", err)
}

func legacyData(lowers []string, upper, work string, opts []string) string {
	var b strings.Builder
	b.WriteString("lowerdir=")
	for i, l := range lowers {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(escapeOpt(l, true))
	}
	if upper != "" {
		b.WriteString(",upperdir=" + escapeOpt(upper, false))
		b.WriteString(",workdir=" + escapeOpt(work, false))
	}
	for _, o := range opts {
		b.WriteString("," + o)
	}
	return b.String()
}

// escapeOpt backslash-escapes what overlayfs splits its options on.
func escapeOpt(p string, lower bool) string {
	if !strings.ContainsAny(p, `\,:`) {
		return p
	}
	var b strings.Builder
	for _, c := range []byte(p) {
		if c == '\\' || c == ',' || (lower && c == ':') {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// commonDir returns the deepest dir containing all of paths (absolute).
func commonDir(paths []string) string {
	if len(paths) == 0 {
		return "/"
	}
	common := filepath.Dir(paths[0])
	for _, p := range paths[1:] {
		for common != "/" && p != common && !strings.HasPrefix(p, common+"/") {
			common = filepath.Dir(common)
		}
	}
	return common
}

func relTo(base string, paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = relOne(base, p)
	}
	return out
}

func relOne(base, p string) string {
	if r, err := filepath.Rel(base, p); err == nil {
		return r
	}
	return p
}

// inPrivateFS runs fn on an OS thread of its own whose working directory
// can change without touching the rest of the process; fn gets chdir.
//
// All threads of a Go process share one fs_struct (cwd, root, umask), and
// any goroutine may run on any of them, so a plain chdir would move the
// cwd of every goroutine. Instead the goroutine locks itself to its thread
// and unshares CLONE_FS, giving that thread a private cwd. It never
// unlocks: when a goroutine exits still locked the runtime terminates the
// thread, so the changed cwd can never leak to other goroutines. This
// needs no re-exec'd helper (which would need a hook in every main
// package) and no fork without exec (unsafe in a multi-threaded Go
// process).
func inPrivateFS(fn func(chdir func(string) error) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread must die with this goroutine.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		errc <- fn(unix.Chdir)
	}()
	return <-errc
}

// bindMount bind-mounts src on target, read-only if readOnly, and returns
// the method used. With the new mount API the clone is made read-only
// before it is attached, so it is never writable at target; mount(2)
// needs a second, remounting call.
func bindMount(src, target string, readOnly bool, feats Features) (string, error) {
	if feats.NewMountAPI {
		fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return "", fmt.Errorf("open_tree %s: %w", src, err)
		}
		defer closeFD(fd)
		if readOnly {
			attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
			if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
				return "", fmt.Errorf("mount_setattr rdonly: %w", err)
			}
		}
		if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return "", fmt.Errorf("move_mount: %w", err)
		}
		return "open_tree", nil
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind %s: %w", src, err)
	}
	if readOnly {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			err = fmt.Errorf("remount read-only: %w", err)
			if uerr := unix.Unmount(target, unix.MNT_DETACH); uerr != nil {
				err = fmt.Errorf("%w; and the writable bind mount could not be removed: %v", err, uerr)
			}
			return "", err
		}
	}
	return "bind", nil
}

// UnmountOption configures Unmount.
type UnmountOption func(*unmountConfig)

type unmountConfig struct {
	detach bool
}

// WithDetach makes Unmount lazy (MNT_DETACH): the mount leaves the tree at
// once and goes away when its last user does. Busy mounts then succeed.
func WithDetach() UnmountOption {
	return func(c *unmountConfig) { c.detach = true }
}

// unmountRetry bounds Unmount's retries of a busy mount: 10 ms doubling,
// about 1.3 s in all.
const (
	unmountFirstDelay = 10 * time.Millisecond
	unmountRetries    = 7
)

// Unmount unmounts the mount at target (an overlay, a bind mount, or a
// FUSE mount, dead or alive).
//
// A busy mount is retried for about a second (a process may be just
// closing its files); after that the error is a *BusyError wrapping
// ErrBusy and unix.EBUSY, naming the processes found holding files, cwd,
// root or mappings under target. A target that is not a mount point wraps
// ErrNotMounted. A dead FUSE mount (its server gone, ENOTCONN on access)
// unmounts normally: umount2 does not talk to the server; should the
// kernel still say ENOTCONN, Unmount detaches it.
func Unmount(target string, opts ...UnmountOption) error {
	var c unmountConfig
	for _, o := range opts {
		o(&c)
	}
	// No Stat or EvalSymlinks of target before umount2: both would fail
	// on a dead FUSE mount. umount2 itself follows a symlinked target,
	// like MountStack resolves one.
	target = filepath.Clean(target)
	flags := 0
	if c.detach {
		flags |= unix.MNT_DETACH
	}
	delay := unmountFirstDelay
	var err error
	for try := 0; ; try++ {
		err = unmountNow(target, flags)
		if !errors.Is(err, unix.EBUSY) || try == unmountRetries {
			break
		}
		time.Sleep(delay)
		delay *= 2
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOTCONN):
		if derr := unmountNow(target, flags|unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("overlay: unmount %s: %w (and with MNT_DETACH: %v)", target, err, derr)
		}
		return nil
	case errors.Is(err, unix.EBUSY):
		resolved := target
		if r, err := filepath.EvalSymlinks(target); err == nil {
			resolved = r // /proc shows resolved paths
		}
		return &BusyError{Target: target, Holders: findHolders(resolved)}
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("overlay: unmount %s: %w (%w)", target, ErrNotMounted, err)
	}
	return fmt.Errorf("overlay: unmount %s: %w", target, err)
}

// unmountNow is umount2 retried on EINTR.
func unmountNow(target string, flags int) error {
	for {
		err := unix.Unmount(target, flags)
		if err != unix.EINTR {
			return err
		}
	}
}

// BusyError is Unmount's error for a mount that stayed busy.
type BusyError struct {
	Target  string
	Holders []Holder // may be empty: holders in other pid namespaces, kernel users
}

// Holder is a process that keeps a mount busy.
type Holder struct {
	PID  int
	Comm string
	// Use says how: "cwd", "root", "fd N" or "mmap", with the path.
	Use string
}

func (e *BusyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "overlay: unmount %s: %v (still busy after retrying for about a second)", e.Target, ErrBusy)
	if len(e.Holders) == 0 {
		b.WriteString("; no holding process found in /proc")
		return b.String()
	}
	b.WriteString("; held by ")
	const show = 8
	for i, h := range e.Holders {
		if i == show {
			fmt.Fprintf(&b, ", and %d more", len(e.Holders)-show)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "pid %d (%s) %s", h.PID, h.Comm, h.Use)
	}
	return b.String()
}

// Unwrap makes errors.Is match ErrBusy and unix.EBUSY.
func (e *BusyError) Unwrap() []error { return []error{ErrBusy, unix.EBUSY} }

// findHolders scans /proc for processes whose cwd, root, open files or
// mapped files lie under target. Processes that vanish or cannot be read
// are skipped.
func findHolders(target string) []Holder {
	under := func(p string) bool {
		p = strings.TrimSuffix(p, " (deleted)")
		return p == target || strings.HasPrefix(p, target+"/") || target == "/"
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Holder
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		base := "/proc/" + d.Name()
		var uses []string
		for _, link := range []string{"cwd", "root"} {
			if p, err := os.Readlink(base + "/" + link); err == nil && under(p) {
				uses = append(uses, link+" "+p)
			}
		}
		if fds, err := os.ReadDir(base + "/fd"); err == nil {
			for _, fd := range fds {
				if p, err := os.Readlink(base + "/fd/" + fd.Name()); err == nil && under(p) {
					uses = append(uses, "fd "+fd.Name()+" "+p)
				}
			}
		}
		if maps, err := os.ReadFile(base + "/maps"); err == nil {
			for _, line := range strings.Split(string(maps), "\n") {
				// address perms offset dev inode path
				f := strings.Fields(line)
				if len(f) >= 6 && under(strings.Join(f[5:], " ")) {
					uses = append(uses, "mmap "+strings.Join(f[5:], " "))
					break
				}
			}
		}
		if len(uses) == 0 {
			continue
		}
		comm, _ := os.ReadFile(base + "/comm")
		for _, u := range uses {
			out = append(out, Holder{PID: pid, Comm: strings.TrimSpace(string(comm)), Use: u})
		}
	}
	return out
}

package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/stratafs/strata/overlay"
	"golang.org/x/sys/unix"
)

func requireRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root to mount", ErrUnavailable)
	}
	return nil
}

func haveFilesystem(name string) bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

func bindMount(src, target string, ro bool) (func() error, error) {
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("bind mount %s on %s: %w", src, target, err)
	}
	if ro {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return nil, fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return func() error {
		if err := unix.Unmount(target, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
		return nil
	}, nil
}

// native is the no-overlay baseline: the layers flattened once into a
// plain directory (cached per layer list), bind-mounted read-only, or
// copied into the upper dir (untimed) for a mutating run.
type native struct {
	scratch string
	mu      sync.Mutex
	flat    map[string]string // layer list -> flattened dir; guarded by mu
}

var (
	_ Backend  = (*native)(nil)
	_ Preparer = (*native)(nil)
)

func newNative(scratch string) *native {
	return &native{scratch: scratch, flat: map[string]string{}}
}

func (*native) Name() string { return "native" }

func (*native) Available() error { return requireRoot() }

func (*native) CopyUpDurability() string { return "no copy-up" }

func (n *native) flattened(layers []string, fixup func(dir string) error) (string, error) {
	key := strings.Join(layers, "\x00")
	n.mu.Lock()
	defer n.mu.Unlock()
	if d, ok := n.flat[key]; ok {
		return d, nil
	}
	if err := os.MkdirAll(n.scratch, 0o755); err != nil {
		return "", fmt.Errorf("native: %w", err)
	}
	d, err := os.MkdirTemp(n.scratch, "flat-")
	if err != nil {
		return "", fmt.Errorf("native: %w", err)
	}
	if err := Flatten(layers, d, overlay.Format{}); err != nil {
		return "", err
	}
	if fixup != nil {
		if err := fixup(d); err != nil {
			return "", fmt.Errorf("native: fix up %s: %w", d, err)
		}
	}
	n.flat[key] = d
	return d, nil
}

// Prepare flattens layers and applies fixup to the copy (once per layer
// list).
func (n *native) Prepare(layers []string, fixup func(dir string) error) error {
	_, err := n.flattened(layers, fixup)
	return err
}

func (n *native) Mount(layers []string, upper, work, target string) (func() error, error) {
	d, err := n.flattened(layers, nil)
	if err != nil {
		return nil, err
	}
	if upper == "" {
		return bindMount(d, target, true)
	}
	// A fresh private copy (untimed), except that files of at least
	// nativeLinkMin bytes are hard-linked and restored afterwards.
	shared, err := copyTree(d, upper)
	if err != nil {
		return nil, fmt.Errorf("native: copy %s to %s: %w", d, upper, err)
	}
	// On disk like the overlays' lower files: otherwise rm-tree would
	// only drop never-written dirty pages.
	if err := syncFS(upper); err != nil {
		return nil, errors.Join(err, restoreShared(shared))
	}
	un, err := bindMount(upper, target, false)
	if err != nil {
		return nil, errors.Join(err, restoreShared(shared))
	}
	return func() error {
		return errors.Join(un(), restoreShared(shared))
	}, nil
}

// nativeLinkMin is the size from which native's mutating runs share a
// file with the flattened dir (a hard link) instead of copying it: in
// practice the large file, which is then not copied (1 GiB) every run.
// The workloads only append to it or change its metadata (append-large,
// chmod-large), which restoreShared undoes exactly: truncate to the old
// size, old mode, owner and times. The data blocks stay the flattened
// ones, and seqread-large/randread-large check them.
const nativeLinkMin = 16 << 20

// sharedFile is a hard-linked file to restore after a native run.
type sharedFile struct {
	path string
	st   unix.Stat_t
}

func restoreShared(files []sharedFile) error {
	var errs []error
	for _, f := range files {
		if err := os.Truncate(f.path, f.st.Size); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Chmod(f.path, os.FileMode(f.st.Mode&0o777)); err != nil {
			errs = append(errs, err)
		}
		if err := os.Lchown(f.path, int(f.st.Uid), int(f.st.Gid)); err != nil {
			errs = append(errs, err)
		}
		ts := []unix.Timespec{f.st.Atim, f.st.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, f.path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			errs = append(errs, &os.PathError{Op: "utimes", Path: f.path, Err: err})
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("native: restore shared files: %w", errors.Join(errs...))
	}
	return nil
}

// copyWorkers is how many regular files copyTree copies at once.
const copyWorkers = 4

// copyTree copies src into the existing dir dst like cp -a (modes, owners,
// times; the flattened tree has no xattrs, devices or fifos), hard-linking
// regular files of at least nativeLinkMin bytes and returning those.
// Regular files are copied by copyWorkers goroutines (their dirs exist
// before they are queued).
func copyTree(src, dst string) (_ []sharedFile, err error) {
	var shared []sharedFile
	type dirAttr struct {
		path string
		st   unix.Stat_t
	}
	var dirs []dirAttr
	type job struct {
		from, to string
		st       unix.Stat_t
	}
	jobs := make(chan job, 256)
	errs := make(chan error, copyWorkers)
	var wg sync.WaitGroup
	for range copyWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first error
			for j := range jobs {
				if first == nil {
					first = copyRegular(j.from, j.to, &j.st)
				}
			}
			errs <- first
		}()
	}
	wait := func() error {
		close(jobs)
		wg.Wait()
		close(errs)
		var all []error
		for e := range errs {
			all = append(all, e)
		}
		return errors.Join(all...)
	}
	err = filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if rel != "." {
				if err := os.Mkdir(to, 0o700); err != nil {
					return err
				}
			}
			dirs = append(dirs, dirAttr{to, st})
			return nil
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, to); err != nil {
				return err
			}
		case unix.S_IFREG:
			if st.Size >= nativeLinkMin {
				if err := os.Link(p, to); err != nil {
					return err
				}
				shared = append(shared, sharedFile{path: p, st: st})
				return nil
			}
			jobs <- job{p, to, st}
			return nil
		default:
			return fmt.Errorf("%s: unsupported file type %#o", p, st.Mode&unix.S_IFMT)
		}
		return copyAttrs(to, &st)
	})
	if werr := wait(); err == nil {
		err = werr
	}
	if err != nil {
		return nil, err
	}
	// Directory attributes last (deepest first), after their entries.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := os.Lchown(d.path, int(d.st.Uid), int(d.st.Gid)); err != nil {
			return nil, err
		}
		if err := os.Chmod(d.path, os.FileMode(d.st.Mode&0o777)|modeExtra(d.st.Mode)); err != nil {
			return nil, err
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, d.path, []unix.Timespec{d.st.Atim, d.st.Mtim}, 0); err != nil {
			return nil, &os.PathError{Op: "utimes", Path: d.path, Err: err}
		}
	}
	return shared, nil
}

// copyRegular copies the regular file from (whose stat is st) to to with
// its mode, owner and times.
func copyRegular(from, to string, st *unix.Stat_t) error {
	if err := copyFile(from, to, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(to, os.FileMode(st.Mode&0o777)|modeExtra(st.Mode)); err != nil {
		return err
	}
	return copyAttrs(to, st)
}

// copyAttrs gives to (not followed) the owner and times of st.
func copyAttrs(to string, st *unix.Stat_t) error {
	if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, to, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: to, Err: err}
	}
	return nil
}

// modeExtra maps setuid/setgid/sticky bits of a raw mode to fs.FileMode.
func modeExtra(m uint32) fs.FileMode {
	var f fs.FileMode
	if m&unix.S_ISUID != 0 {
		f |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		f |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		f |= fs.ModeSticky
	}
	return f
}

// kernelBackend mounts kernel overlayfs: with the kernel's default options
// through a plain mount(2) ("kernel-overlayfs", what containerd's overlay
// snapshotter does), or through overlay.Mount with strata's format options
// ("strata-kernel").
type kernelBackend struct {
	name    string
	strata  bool
	scratch string
}

var _ Backend = (*kernelBackend)(nil)

func (k *kernelBackend) Name() string { return k.name }

func (k *kernelBackend) Available() error {
	if err := requireRoot(); err != nil {
		return fmt.Errorf("%s: %w", k.name, err)
	}
	if !haveFilesystem("overlay") {
		return fmt.Errorf("%s: %w: no 'overlay' in /proc/filesystems", k.name, ErrUnavailable)
	}
	return nil
}

func (k *kernelBackend) CopyUpDurability() string { return "fsync per copy-up" }

func (k *kernelBackend) Mount(layers []string, upper, work, target string) (func() error, error) {
	var cleanup func()
	ro := upper == ""
	if ro && len(layers) < 2 {
		// The kernel needs two lowers without an upper: give it a private
		// empty upper and mount read-only.
		d, err := os.MkdirTemp(k.scratch, "ro-")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		upper, work = filepath.Join(d, "upper"), filepath.Join(d, "work")
		for _, p := range []string{upper, work} {
			if err := os.Mkdir(p, 0o755); err != nil {
				os.RemoveAll(d)
				return nil, fmt.Errorf("%s: %w", k.name, err)
			}
		}
		cleanup = func() { os.RemoveAll(d) }
	}
	var err error
	if k.strata {
		err = k.mountStrata(layers, upper, work, target, ro)
	} else {
		err = k.mountPlain(layers, upper, work, target, ro)
	}
	if err != nil {
		if cleanup != nil {
			cleanup()
		}
		return nil, err
	}
	return func() error {
		err := unix.Unmount(target, 0)
		if cleanup != nil {
			cleanup()
		}
		if err != nil {
			return fmt.Errorf("%s: unmount %s: %w", k.name, target, err)
		}
		return nil
	}, nil
}

func (k *kernelBackend) mountPlain(layers []string, upper, work, target string, ro bool) error {
	opts := "lowerdir=" + strings.Join(layers, ":")
	if upper != "" {
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	var flags uintptr
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("overlay", target, "overlay", flags, opts); err != nil {
		return fmt.Errorf("%s: mount %s (%d layers, %d bytes of options): %w", k.name, target, len(layers), len(opts), err)
	}
	return nil
}

func (k *kernelBackend) mountStrata(layers []string, upper, work, target string, ro bool) error {
	var opts []overlay.StackOption
	if upper != "" {
		opts = append(opts, overlay.WithUpper(upper, work))
	}
	s, err := overlay.NewStack(layers, opts...)
	if err != nil {
		return fmt.Errorf("%s: %w", k.name, err)
	}
	if err := overlay.Mount(s, target, overlay.MountOptions{ReadOnly: ro}); err != nil {
		return fmt.Errorf("%s: %w", k.name, err)
	}
	return nil
}

// fuseDaemon runs a FUSE overlay program that takes fuse-overlayfs's
// command line (-o lowerdir=…,upperdir=…,workdir=… TARGET) and returns
// once the mount is live: fuse-overlayfs itself, and strata's FUSE backend
// (`strata mount --backend fuse`, the same argv as its fuse-strata name).
type fuseDaemon struct {
	name       string
	durability string
	// command returns the program and the arguments before -o.
	command func() (string, []string, error)
}

var _ Backend = (*fuseDaemon)(nil)

func newFuseOverlayfs() *fuseDaemon {
	return &fuseDaemon{name: "fuse-overlayfs", durability: "no fsync", command: func() (string, []string, error) {
		p, err := exec.LookPath("fuse-overlayfs")
		if err != nil {
			return "", nil, fmt.Errorf("%w: binary not found (apt-get install fuse-overlayfs fuse3)", ErrUnavailable)
		}
		return p, nil, nil
	}}
}

// StrataBinEnv names the strata binary strata-fuse runs (default: bin/strata
// below the working dir, as `make build` writes it, then PATH).
const StrataBinEnv = "STRATA_BIN"

func newStrataFUSE() *fuseDaemon {
	return &fuseDaemon{name: "strata-fuse", durability: "fsync per copy-up", command: func() (string, []string, error) {
		p := os.Getenv(StrataBinEnv)
		if p == "" {
			if _, err := os.Stat("bin/strata"); err == nil {
				p = "bin/strata"
			} else if p, err = exec.LookPath("strata"); err != nil {
				return "", nil, fmt.Errorf("%w: no strata binary (make build, or set %s)", ErrUnavailable, StrataBinEnv)
			}
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", nil, fmt.Errorf("%w: %v (make build, or set %s)", ErrUnavailable, err, StrataBinEnv)
		}
		return abs, []string{"mount", "--backend", "fuse"}, nil
	}}
}

func (d *fuseDaemon) Name() string { return d.name }

func (d *fuseDaemon) CopyUpDurability() string { return d.durability }

func (d *fuseDaemon) Available() error {
	if err := requireRoot(); err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	if _, _, err := d.command(); err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %w: /dev/fuse: %v", d.name, ErrUnavailable, err)
	}
	unix.Close(fd)
	return nil
}

func (d *fuseDaemon) Mount(layers []string, upper, work, target string) (func() error, error) {
	prog, args, err := d.command()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	opts := "lowerdir=" + strings.Join(layers, ":")
	if upper != "" {
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	// Both daemonize once the mount is live.
	cmd := exec.Command(prog, append(args, "-o", opts, target)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s: mount %s: %w: %s", d.name, target, err, bytes.TrimSpace(out))
	}
	return func() error {
		if err := unix.Unmount(target, 0); err != nil {
			return fmt.Errorf("%s: unmount %s: %w", d.name, target, err)
		}
		return nil
	}, nil
}

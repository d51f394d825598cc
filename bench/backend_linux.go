package bench

import (
	"bytes"
	"fmt"
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

var _ Backend = (*native)(nil)

func newNative(scratch string) *native {
	return &native{scratch: scratch, flat: map[string]string{}}
}

func (*native) Name() string { return "native" }

func (*native) Available() error { return requireRoot() }

func (*native) CopyUpDurability() string { return "no copy-up" }

func (n *native) flattened(layers []string) (string, error) {
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
	n.flat[key] = d
	return d, nil
}

func (n *native) Mount(layers []string, upper, work, target string) (func() error, error) {
	d, err := n.flattened(layers)
	if err != nil {
		return nil, err
	}
	if upper == "" {
		return bindMount(d, target, true)
	}
	// cp -a keeps modes, times and xattrs; the copy is not timed.
	cmd := exec.Command("cp", "-a", "--reflink=auto", d+"/.", upper+"/")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("native: copy %s to %s: %w: %s", d, upper, err, bytes.TrimSpace(out))
	}
	return bindMount(upper, target, false)
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

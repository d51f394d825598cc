package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Data image.
//
// Run keeps all its data (layers, scratch, run dirs) on a fresh ext4
// filesystem in a sparse image file, loop-mounted for the run: the host
// filesystem may be mounted with discard, which makes creating many files
// right after deleting many (every mutating round) several times slower for
// tens of seconds, and its state carries over from run to run. The image's
// ext4 is made with mkfs.ext4's default features and mounted without
// discard; its inode tables and journal are initialised by mkfs (no lazy
// init thread writing during the run). The loop device uses direct I/O, so
// the data is not cached twice (in the image's and the host's page cache).

// imageBytes is the size of the data image for spec s: the estimate of the
// run's peak use plus room for ext4's own metadata (inode tables, journal,
// reserved blocks), rounded up to a MiB.
func imageBytes(s Spec) int64 {
	n := s.EstimateBytes()
	n += n/8 + 256<<20
	return (n + 1<<20 - 1) &^ (1<<20 - 1)
}

// dataImage is a loop-mounted ext4 image holding a run's data.
type dataImage struct {
	file string // the image file
	dev  string // its loop device
	mnt  string // where it is mounted
	size int64
	dio  bool // the loop device does direct I/O
}

// ErrImage: the data image could not be created, attached or mounted.
var ErrImage = errors.New("data image")

// createImage creates a sparse image file of size bytes at file (which
// must not exist), makes an ext4 filesystem in it, attaches it to a loop
// device and mounts it on the existing empty dir mnt. On failure it undoes
// whatever it did.
func createImage(file, mnt string, size int64) (im *dataImage, err error) {
	for _, tool := range []string{"mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("bench: %w: %s not found (e2fsprogs, util-linux; or run with --no-image)", ErrImage, tool)
		}
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bench: %w: %w", ErrImage, err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	im = &dataImage{file: file, mnt: mnt, size: size}
	defer func() {
		if err != nil {
			err = errors.Join(err, im.close(false))
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("bench: %w: size %s: %w", ErrImage, file, err)
	}
	// Default features; inode tables and journal zeroed now rather than by
	// the kernel's lazy-init thread during the run.
	mkfs := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", file) //nolint:gosec // fixed tool; file is the harness's own image
	if out, err := mkfs.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: %w: mkfs.ext4 %s: %w: %s", ErrImage, file, err, bytes.TrimSpace(out))
	}
	out, err := exec.Command("losetup", "--direct-io=on", "-f", "--show", file).Output() //nolint:gosec // fixed tool; file is the harness's own image
	if err != nil {
		return nil, fmt.Errorf("bench: %w: losetup %s: %w%s", ErrImage, file, err, exitStderr(err))
	}
	im.dev = strings.TrimSpace(string(out))
	if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(im.dev), "loop", "dio")); err == nil {
		im.dio = strings.TrimSpace(string(b)) == "1"
	}
	if err := unix.Mount(im.dev, mnt, "ext4", 0, ""); err != nil {
		return nil, fmt.Errorf("bench: %w: mount %s on %s: %w", ErrImage, im.dev, mnt, err)
	}
	return im, nil
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}

// close unmounts the image (mounts below it must be gone), detaches the
// loop device and, unless keep, removes the image file. A FUSE daemon may
// still be exiting after its unmount, so a busy unmount is retried for a
// few seconds before it is detached lazily.
func (im *dataImage) close(keep bool) error {
	var errs []error
	if im.dev != "" {
		if isMountPoint(im.mnt) {
			err := unix.Unmount(im.mnt, 0)
			for i := 0; errors.Is(err, unix.EBUSY) && i < 50; i++ {
				time.Sleep(100 * time.Millisecond)
				err = unix.Unmount(im.mnt, 0)
			}
			if errors.Is(err, unix.EBUSY) {
				err = unix.Unmount(im.mnt, unix.MNT_DETACH)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("bench: unmount data image %s: %w", im.mnt, err))
			}
		}
		// A device still in use (lazy unmount) is detached by the kernel
		// once released (autoclear).
		if out, err := exec.Command("losetup", "-d", im.dev).CombinedOutput(); err != nil { //nolint:gosec // fixed tool; the device losetup gave us
			errs = append(errs, fmt.Errorf("bench: losetup -d %s: %w: %s", im.dev, err, bytes.TrimSpace(out)))
		}
	}
	if !keep {
		if err := os.Remove(im.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("bench: remove data image: %w", err))
		}
	}
	return errors.Join(errs...)
}

// describe says where the data lives, for the report.
func (im *dataImage) describe() string {
	dio := "direct I/O"
	if !im.dio {
		dio = "direct I/O unavailable"
	}
	return fmt.Sprintf("on a loop-mounted ext4 image, %d MiB sparse file (mkfs.ext4 defaults, mounted without discard; loop %s)", im.size>>20, dio)
}

func isMountPoint(dir string) bool {
	ms, err := readMounts()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.point == dir {
			return true
		}
	}
	return false
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	point, fstype, source, opts string
}

func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root point opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 6 || len(b) < 3 {
			continue
		}
		out = append(out, mountEntry{point: unescapeMount(a[4]), fstype: b[0], source: unescapeMount(b[1]), opts: a[5] + "," + b[2]})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hostFS describes the filesystem holding dir: type, source and mount
// options (per-mount and superblock), e.g. "ext4 /dev/vda (rw,relatime,discard)".
func hostFS(dir string) string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	ms, err := readMounts()
	if err != nil {
		return ""
	}
	var best *mountEntry
	for i, m := range ms {
		if dir == m.point || m.point == "/" || strings.HasPrefix(dir, m.point+"/") {
			if best == nil || len(m.point) >= len(best.point) {
				best = &ms[i]
			}
		}
	}
	if best == nil {
		return ""
	}
	// Drop duplicate options (rw appears in both halves).
	var opts []string
	seen := map[string]bool{}
	for _, o := range strings.Split(best.opts, ",") {
		if o != "" && !seen[o] {
			seen[o] = true
			opts = append(opts, o)
		}
	}
	return fmt.Sprintf("%s %s mounted on %s (%s)", best.fstype, best.source, best.point, strings.Join(opts, ","))
}

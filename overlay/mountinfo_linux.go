package overlay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountEntry is one line of /proc/self/mountinfo (see proc(5)), with the
// escapes (\040 for a space, \054 for a comma, ...) decoded.
type mountEntry struct {
	ID         int
	Parent     int
	MountPoint string
	FSType     string
	Source     string
	// Super holds the super block options in order, split on unescaped
	// commas: "key" or "key=value". An overlay mount lists its layers
	// here (lowerdir=, lowerdir+=, upperdir=, workdir=).
	Super []string
}

// option returns the values of key in the super options, in order.
func (e *mountEntry) option(key string) []string {
	var vals []string
	for _, o := range e.Super {
		if k, v, ok := strings.Cut(o, "="); ok && k == key {
			vals = append(vals, v)
		}
	}
	return vals
}

// lastOption returns the last value of key and whether it was present.
func (e *mountEntry) lastOption(key string) (string, bool) {
	vals := e.option(key)
	if len(vals) == 0 {
		return "", false
	}
	return vals[len(vals)-1], true
}

// hasFlag reports whether the super options hold the bare flag key.
func (e *mountEntry) hasFlag(key string) bool {
	for _, o := range e.Super {
		if o == key {
			return true
		}
	}
	return false
}

// readMountinfo parses /proc/self/mountinfo.
func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only
	entries, err := parseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("overlay: /proc/self/mountinfo: %w", err)
	}
	return entries, nil
}

// parseMountinfo parses the mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//
// Fields are separated by single spaces; (7) is zero or more optional
// fields ended by "-". Spaces, tabs, newlines and backslashes inside fields
// are octal escapes; overlayfs also escapes commas (and '=') in its layer
// paths, so splitting (11) on literal commas is exact.
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	// Overlay lines with 500 long layer paths exceed bufio's default.
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		fields := strings.Split(string(line), " ")
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 7 || sep < 0 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("malformed line %q", truncate(string(line), 120))
		}
		id, err1 := strconv.Atoi(fields[0])
		parent, err2 := strconv.Atoi(fields[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed mount ids in %q", truncate(string(line), 120))
		}
		e := mountEntry{
			ID:         id,
			Parent:     parent,
			MountPoint: unescapeMountinfo(fields[4]),
			FSType:     unescapeMountinfo(fields[sep+1]),
			Source:     unescapeMountinfo(fields[sep+2]),
		}
		if sep+3 < len(fields) {
			for _, o := range strings.Split(fields[sep+3], ",") {
				if o != "" {
					e.Super = append(e.Super, unescapeMountinfo(o))
				}
			}
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// unescapeMountinfo decodes the kernel's \ooo octal escapes.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return s[0] <= '3'
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// layerUse names a dir as one overlay mount uses it.
type layerUse struct {
	entry *mountEntry
	key   string // "upperdir" or "workdir"
	path  string
}

// findOverlayUse looks for overlay mounts that already use upper or work
// as their upper or work dir (either role: a work dir of one mount used as
// the upper of another is just as broken). The kernel only warns about this
// in dmesg when index=off, and the second mount then corrupts the first's
// copy-ups, so strata refuses it itself.
//
// Paths compare equal when their strings match after cleaning, or when both
// resolve to the same inode (symlinks, bind mounts): one stat per upper and
// work dir of every overlay mount, cheap next to the mount itself. Relative paths in
// mountinfo (from mount(2) callers that chdir'ed) are resolved by inode only
// when they happen to resolve from our cwd; such mounts can be missed.
func findOverlayUse(entries []mountEntry, dirs ...string) (*layerUse, string) {
	type ident struct{ dev, ino uint64 }
	var want []ident
	for _, d := range dirs {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err == nil {
			want = append(want, ident{st.Dev, st.Ino})
		} else {
			want = append(want, ident{^uint64(0), ^uint64(0)})
		}
	}
	for i := range entries {
		e := &entries[i]
		if e.FSType != "overlay" {
			continue
		}
		for _, key := range []string{"upperdir", "workdir"} {
			for _, v := range e.option(key) {
				for j, d := range dirs {
					if filepath.Clean(v) == d {
						return &layerUse{entry: e, key: key, path: v}, d
					}
					var st unix.Stat_t
					if err := unix.Stat(v, &st); err == nil && st.Dev == want[j].dev && st.Ino == want[j].ino {
						return &layerUse{entry: e, key: key, path: v}, d
					}
				}
			}
		}
	}
	return nil, ""
}

// lastMountAt returns the topmost mount on target (the last one listed).
func lastMountAt(entries []mountEntry, target string) *mountEntry {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].MountPoint == target {
			return &entries[i]
		}
	}
	return nil
}

// moduleDefault reads a boolean overlay module parameter ("Y"/"N").
func moduleDefault(name string) (bool, bool) {
	b, err := os.ReadFile("/sys/module/overlay/parameters/" + name)
	if err != nil {
		return false, false
	}
	switch strings.TrimSpace(string(b)) {
	case "Y", "y", "1":
		return true, true
	case "N", "n", "0":
		return false, true
	}
	return false, false
}

// effectiveOption returns the value of a format option an overlay mount
// runs with. overlayfs shows redirect_dir, metacopy and index in its
// options only when they differ from the module defaults, so an absent
// option means the default in /sys/module/overlay/parameters. ok is false
// when the value cannot be determined.
func effectiveOption(e *mountEntry, key string) (val string, ok bool) {
	if v, found := e.lastOption(key); found {
		return v, true
	}
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	switch key {
	case "metacopy", "index":
		def, ok := moduleDefault(key)
		return onOff(def), ok
	case "redirect_dir":
		def, ok := moduleDefault("redirect_dir")
		if !ok {
			return "", false
		}
		if def {
			return "on", true
		}
		follow, ok := moduleDefault("redirect_always_follow")
		if !ok {
			return "", false
		}
		if follow {
			return "follow", true
		}
		return "nofollow", true
	}
	return "", false
}

// MountsUnder lists the mount points at or below dir (dir itself
// included), from /proc/self/mountinfo, in its order: a mount comes after
// the mounts it sits on. dir must be absolute and free of symlinks.
// Callers detach in reverse order, and never delete through a listed
// path.
func MountsUnder(dir string) ([]string, error) {
	entries, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.MountPoint == dir || strings.HasPrefix(e.MountPoint, dir+"/") {
			out = append(out, e.MountPoint)
		}
	}
	return out, nil
}

// IsMountPoint reports whether dir (absolute, free of symlinks) is a mount
// point. Unlike a device-number comparison it also sees bind mounts of
// the same filesystem.
func IsMountPoint(dir string) (bool, error) {
	entries, err := readMountinfo()
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if e.MountPoint == dir {
			return true, nil
		}
	}
	return false, nil
}

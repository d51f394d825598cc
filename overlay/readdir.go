package overlay

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// DirEntry is one name of a merged directory listing.
type DirEntry struct {
	Name  string
	Layer int         // serving layer (topmost holding the name), index into Stack.Layers()
	Type  fs.FileMode // type bits only (fs.ModeDir, fs.ModeSymlink, ...; 0 for regular files)
	Ino   uint64      // inode number in the serving layer (not a union inode number)
}

// ReadDir lists the union directory p: every name once, served by the
// topmost layer holding it, whiteouts removed, lower layers cut off at an
// opaque directory, sorted by name. "." and ".." are not listed.
func (s *Stack) ReadDir(p string) ([]DirEntry, error) {
	d, err := s.LookupDir(p)
	if err != nil {
		return nil, err
	}
	return s.ReadDirOf(d)
}

// ReadDirOf lists the merged directory d (see ReadDir). It reads each
// layer with getdents and trusts d_type: only character devices (possible
// whiteouts), entries of unknown type, and empty-file candidates for xattr
// whiteouts in opaque="x" lower dirs cost an extra stat.
func (s *Stack) ReadDirOf(d *Dir) ([]DirEntry, error) {
	bufp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bufp)
	var (
		out  []DirEntry
		seen map[string]struct{}
	)
	if len(d.Layers) > 1 {
		seen = make(map[string]struct{}, 1024)
	}
	for i := range d.Layers {
		dl := &d.Layers[i]
		last := i == len(d.Layers)-1
		xw := dl.XWhiteouts && !s.isUpper(dl.Index)
		err := readDirents(dl.RealPath, *bufp, func(fd int, name []byte, typ uint8, ino uint64) error {
			if seen != nil {
				if _, ok := seen[string(name)]; ok {
					return nil
				}
			}
			mode, ok := dtypeMode(typ)
			whiteout := false
			if !ok || mode&fs.ModeCharDevice != 0 || (xw && mode == 0) {
				var st unix.Stat_t
				if err := unix.Fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					if err == unix.ENOENT {
						return nil
					}
					return &os.PathError{Op: "overlay readdir fstatat", Path: dl.RealPath + "/" + string(name), Err: err}
				}
				mode = statMode(st.Mode)
				if IsWhiteoutStat(&st) {
					whiteout = true
				} else if xw && mode == 0 && st.Size == 0 {
					wo, err := s.format.IsXattrWhiteout(dl.RealPath+"/"+string(name), &st, true)
					if err != nil {
						return err
					}
					whiteout = wo
				}
			}
			n := string(name)
			if seen != nil && !last {
				seen[n] = struct{}{}
			}
			if !whiteout {
				out = append(out, DirEntry{Name: n, Layer: dl.Index, Type: mode, Ino: ino})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("overlay: readdir %q: %w", d.Path, err)
		}
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

var direntBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// readDirents calls fn for every entry of dir but "." and "..", with the
// raw name (valid during the call only), d_type and d_ino.
func readDirents(dir string, buf []byte, fn func(fd int, name []byte, typ uint8, ino uint64) error) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer closeFD(fd)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "getdents", Path: dir, Err: err}
		}
		if n <= 0 {
			return nil
		}
		// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
		for off := 0; off < n; {
			rec := buf[off:n]
			ino := binary.NativeEndian.Uint64(rec[0:8])
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			typ := rec[18]
			name := rec[19:reclen]
			if i := indexZero(name); i >= 0 {
				name = name[:i]
			}
			off += reclen
			if ino == 0 || (len(name) == 1 && name[0] == '.') || (len(name) == 2 && name[0] == '.' && name[1] == '.') {
				continue
			}
			if err := fn(fd, name, typ, ino); err != nil {
				return err
			}
		}
	}
}

func indexZero(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// dtypeMode returns the fs.FileMode type bits of a getdents d_type; false
// for DT_UNKNOWN (the caller lstats).
func dtypeMode(t uint8) (fs.FileMode, bool) {
	ifmt := dtypeIFMT(t)
	return statMode(ifmt), ifmt != 0
}

// statMode returns the fs.FileMode type bits of a stat mode.
func statMode(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return 0
}

// closeFD closes fd where a close error carries nothing to act on: a
// read-only fd, or a mount API fd (fsopen, fsmount, open_tree). A fd that
// was written to is closed with its error checked instead.
func closeFD(fd int) { _ = unix.Close(fd) }

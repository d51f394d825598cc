package fuse

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// This file holds the union logic the FUSE nodes need: per-directory lookup
// through the layers, the merged listing, whiteouts, and copy-up through the
// work dir. It writes kernel overlayfs's on-disk format.
//
// TODO(core): the overlay package is growing Stack.Lookup/ReadDir/CopyUp/
// Remove; once they land, the functions here should delegate to them.

// lref names an object in one lower layer: lowers[layer]/path.
type lref struct {
	layer int    // index into union.lowers
	path  string // slash path relative to the layer root; "" is the root
}

// union is the immutable description of the layers a mount serves, plus
// counters. All fields are set before the mount and never change.
type union struct {
	stack  *overlay.Stack
	format overlay.Format
	upper  string   // "" for a read-only stack
	work   string   // "" for a read-only stack
	lowers []string // topmost first
	index  *overlay.LowerIndex

	devs     map[uint64]uint64 // st_dev of a layer -> index for xino bits
	uuids    [][]byte          // per lower layer: filesystem uuid, or nil
	lowerFds []int             // per lower layer: fd of the root, for open_by_handle_at
	lowerDev []uint64          // per lower layer: st_dev of its root
	upperFd  int               // O_PATH fd of the upper root, -1 without upper
	workFd   int               // O_PATH fd of the work dir, -1 without upper
	pid      int               // for names of temporaries
	tmpSeq   atomic.Uint64     // names of temporaries in the work dir
	volatile bool              // skip fsync of copied-up data
	created  creation          // owner of files made in the work dir

	// cuMu serializes copy-ups and other multi-step changes of the upper
	// layer, so that two requests never build the same object twice.
	cuMu sync.Mutex
	dirs dirFds // guarded by cuMu
}

func newUnion(s *overlay.Stack) (*union, error) {
	u := &union{
		stack:   s,
		format:  s.Format(),
		upper:   s.Upper(),
		work:    s.Work(),
		lowers:  s.Lowers(),
		index:   s.LowerIndex(),
		devs:    map[uint64]uint64{},
		upperFd: -1,
		workFd:  -1,
		pid:     os.Getpid(),
	}
	// The upper's device gets xino index 0 so that, when all layers share
	// one filesystem (the common case), st_ino is the real inode number,
	// as kernel overlayfs reports it.
	for _, l := range s.Layers() {
		var st unix.Stat_t
		if err := unix.Stat(l, &st); err != nil {
			return nil, &os.PathError{Op: "stat layer", Path: l, Err: err}
		}
		if _, ok := u.devs[st.Dev]; !ok {
			u.devs[st.Dev] = uint64(len(u.devs))
		}
	}
	for _, l := range u.lowers {
		// open_by_handle_at refuses an O_PATH mount fd
		fd, err := unix.Open(l, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			u.close()
			return nil, &os.PathError{Op: "open layer", Path: l, Err: err}
		}
		u.lowerFds = append(u.lowerFds, fd)
		u.uuids = append(u.uuids, fsUUID(l))
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			u.close()
			return nil, &os.PathError{Op: "stat layer", Path: l, Err: err}
		}
		u.lowerDev = append(u.lowerDev, st.Dev)
	}
	if u.upper != "" {
		fd, err := unix.Open(u.upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			u.close()
			return nil, &os.PathError{Op: "open upper", Path: u.upper, Err: err}
		}
		u.upperFd = fd
		if fd, err = unix.Open(u.work, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			u.close()
			return nil, &os.PathError{Op: "open work", Path: u.work, Err: err}
		}
		u.workFd = fd
		u.created = newCreation(u.work)
		if err := u.cleanWork(); err != nil {
			u.close()
			return nil, err
		}
	}
	return u, nil
}

func (u *union) close() {
	for _, fd := range u.lowerFds {
		unix.Close(fd)
	}
	u.lowerFds = nil
	if u.upperFd >= 0 {
		unix.Close(u.upperFd)
		u.upperFd = -1
	}
	if u.workFd >= 0 {
		_ = unix.Close(u.workFd) // O_PATH: nothing to flush
		u.workFd = -1
	}
	u.cuMu.Lock()
	u.dropDirFds()
	u.cuMu.Unlock()
}

// safeUpper returns a path to the upper object at union path rel that
// goes through an O_PATH fd of its parent dir, opened with openUpper:
// "/proc/self/fd/N/name". Path calls on it act on the name in exactly
// that dir even if a concurrent rename swaps a symlink into the dirs
// above. Call done when finished with the path.
func (u *union) safeUpper(rel string) (p string, done func(), err error) {
	if rel == "" || rel == "." {
		return u.upper, func() {}, nil
	}
	fd, err := u.openUpper(path.Dir(rel), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, path.Base(rel)), func() { unix.Close(fd) }, nil
}

// safeUpperDir is safeUpper for a dir itself: "/proc/self/fd/N", to be
// used with calls that follow the final component.
func (u *union) safeUpperDir(rel string) (p string, done func(), err error) {
	fd, err := u.openUpper(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { unix.Close(fd) }, nil
}

// openUpper opens the upper object at the union path rel without
// following any symlink on the way or at the end (with O_PATH|O_NOFOLLOW,
// a final symlink itself is opened), and without leaving the upper
// layer: a concurrent rename that swaps a symlink into the path cannot
// redirect the server to a file outside the union.
func (u *union) openUpper(rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(u.upperFd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // EAGAIN: a concurrent rename; retry
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: u.upperPath(rel), Err: err}
		}
		return fd, nil
	}
}

// cleanWork removes leftovers of interrupted copy-ups from the work dir.
// Kernel overlayfs keeps its own "work" and "index" subdirs there; they
// are left alone.
func (u *union) cleanWork() error {
	ents, err := os.ReadDir(u.work)
	if err != nil {
		return fmt.Errorf("fuse: read work dir: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.RemoveAll(path.Join(u.work, e.Name())); err != nil {
				return fmt.Errorf("fuse: clean work dir: %w", err)
			}
		}
	}
	return nil
}

const tmpPrefix = "#strata-"

// tmpName returns a fresh path in the work dir.
func (u *union) tmpName() string { return path.Join(u.work, u.tmpBase()) }

// tmpBase returns a fresh name for a temporary in the work dir (u.workFd).
func (u *union) tmpBase() string {
	return tmpPrefix + strconv.Itoa(u.pid) + "-" + strconv.FormatUint(u.tmpSeq.Add(1), 10)
}

func (u *union) upperPath(rel string) string { return path.Join(u.upper, rel) }

func (u *union) lowerPath(r lref) string { return path.Join(u.lowers[r.layer], r.path) }

// ino maps a real inode of a layer to the union's inode number: the index
// of the layer's filesystem in the top bits (as kernel xino does), the
// real number below.
func (u *union) ino(dev, ino uint64) uint64 {
	return u.devs[dev]<<48 | ino&(1<<48-1)
}

// entry is the result of looking up one name in a merged directory.
type entry struct {
	st       unix.Stat_t // attributes to report (from the top object)
	upper    bool        // the top object is in the upper layer
	lowers   []lref      // dirs: merged lower dirs; non-dirs: the data file below
	opaque   bool        // an upper dir hiding all lower contents
	redirect string      // redirect xattr of the upper dir, if any
	metacopy bool        // upper is a metadata-only copy; data in lowers[0]
	ino      uint64      // union inode number
}

func (e *entry) isDir() bool { return e.st.Mode&unix.S_IFMT == unix.S_IFDIR }

// lstatLower is lstat of the lower object r, resolved from the fd of its
// layer root (the path from / to the layer is not walked again).
func (u *union) lstatLower(r lref, st *unix.Stat_t) error {
	if r.path == "" || r.layer >= len(u.lowerFds) {
		return lstat(u.lowerPath(r), st)
	}
	for {
		err := unix.Fstatat(u.lowerFds[r.layer], r.path, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

func lstat(p string, st *unix.Stat_t) error {
	for {
		err := unix.Lstat(p, st)
		if err != unix.EINTR {
			return err
		}
	}
}

// dirState is what a node knows about a merged directory.
type dirState struct {
	upper  bool              // the dir exists in the upper layer at its union path
	lowers []lref            // merged lower dirs, topmost first
	index  *overlay.DirIndex // name index of lowers, or nil
}

// indexMinLowers is the number of merged lower dirs from which a dir's
// lookups go through the lower name index: with one lower dir, an lstat
// per name costs no more than a probe after the listing.
const indexMinLowers = 2

// dirIndex returns the name index of the merged lower dirs ls.
func (u *union) dirIndex(ls []lref) (*overlay.DirIndex, error) {
	dirs := make([]overlay.LowerDir, len(ls))
	for i, l := range ls {
		dirs[i] = overlay.LowerDir{Layer: l.layer, Path: l.path}
	}
	return u.index.Dir(dirs)
}

// candidates narrows the lower dirs of d to those where name has an
// entry (up to a whiteout), from the index; without one, all of them.
func (d *dirState) candidates(name string) []lref {
	if d.index == nil {
		return d.lowers
	}
	var buf [8]overlay.IndexHit
	hits := d.index.Hits(name, buf[:0])
	if len(hits) == 0 {
		return nil
	}
	out := make([]lref, len(hits))
	for i, h := range hits {
		out[i] = d.lowers[h.Dir]
	}
	return out
}

// candidateHits is candidates with the index hit of each candidate (nil
// without an index).
func (d *dirState) candidateHits(name string) ([]lref, []overlay.IndexHit) {
	if d.index == nil {
		return d.lowers, nil
	}
	hits := d.index.Hits(name, make([]overlay.IndexHit, 0, 4))
	if len(hits) == 0 {
		return nil, nil
	}
	out := make([]lref, len(hits))
	for i, h := range hits {
		out[i] = d.lowers[h.Dir]
	}
	return out, hits
}

// lookup resolves name in the directory rel (union path) with state d.
// It returns unix.ENOENT if the name is absent or whited out.
func (u *union) lookup(rel string, d dirState, name string) (*entry, error) {
	e := &entry{}
	found := false
	redirect := ""
	if d.upper {
		p := u.upperPath(path.Join(rel, name))
		err := lstat(p, &e.st)
		switch {
		case err == nil:
			if overlay.IsWhiteoutStat(&e.st) {
				return nil, unix.ENOENT
			}
			found, e.upper = true, true
			if e.isDir() {
				op, err := u.format.DirOpacity(p)
				if err != nil {
					return nil, err
				}
				if op == overlay.Opaque {
					e.opaque = true
					e.ino = u.upperIno(p, &e.st)
					return e, nil
				}
				if v, ok, _ := getxattr(p, u.format.Xattr(overlay.XattrRedirect)); ok && v != "" {
					redirect = v
					e.redirect = v
				}
			} else {
				if _, ok, _ := getxattr(p, u.format.Xattr(overlay.XattrMetacopy)); ok {
					e.metacopy = true
					if v, ok, _ := getxattr(p, u.format.Xattr(overlay.XattrRedirect)); ok && v != "" {
						redirect = v
					}
				} else {
					e.ino = u.upperIno(p, &e.st)
					return e, nil
				}
			}
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		default:
			return nil, err
		}
	}
	// Lower layers. With a redirect, the lookup continues at the redirect
	// path in every layer below instead of under the parent's lower dirs.
	//
	// hits[i], when there, is what the index knows of cands[i]: a
	// whiteout, a non-dir under a dir, or a plain dir (no overlay xattrs)
	// below the top one is settled without a syscall, and a plain top
	// object needs its lstat only.
	cands, hits := d.candidateHits(name)
	if redirect != "" {
		cands, hits = u.redirectCands(rel, redirect, -1), nil
	}
	for i := 0; i < len(cands); i++ {
		c := cands[i]
		var r lref
		if redirect != "" {
			r = c
		} else {
			r = lref{c.layer, path.Join(c.path, name)}
		}
		plain := false
		if i < len(hits) {
			h := hits[i]
			if h.Whiteout {
				break
			}
			if found && e.isDir() && h.Type != 0 {
				if h.Type != unix.S_IFDIR {
					break // a non-dir below a dir is hidden
				}
				if h.Plain {
					e.lowers = append(e.lowers, r) // merges in, not opaque, no redirect
					continue
				}
			}
			plain = h.Plain
		}
		var st unix.Stat_t
		p := u.lowerPath(r)
		err := u.lstatLower(r, &st)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if overlay.IsWhiteoutStat(&st) {
			break
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 && !plain {
			parent := path.Dir(p)
			if op, _ := u.format.DirOpacity(parent); op == overlay.HasXattrWhiteouts {
				if wo, _ := u.format.IsXattrWhiteout(p, &st, true); wo {
					break
				}
			}
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if found {
			if e.isDir() {
				if !isDir {
					break // a non-dir below a dir is hidden
				}
			} else if e.metacopy {
				if isDir {
					break
				}
				e.lowers = append(e.lowers, r)
				if _, ok, _ := getxattr(p, u.format.Xattr(overlay.XattrMetacopy)); ok {
					continue // lower metacopy: keep looking for the data
				}
				break
			}
		} else {
			found = true
			e.st = st
			if !isDir {
				e.lowers = []lref{r}
				e.ino = u.ino(st.Dev, st.Ino)
				if plain {
					return e, nil
				}
				if _, ok, _ := getxattr(p, u.format.Xattr(overlay.XattrMetacopy)); ok {
					e.metacopy = true
					continue
				}
				return e, nil
			}
		}
		// a lower dir merges in
		e.lowers = append(e.lowers, r)
		if plain {
			continue
		}
		if op, _ := u.format.DirOpacity(p); op == overlay.Opaque {
			break
		}
		if v, ok, _ := getxattr(p, u.format.Xattr(overlay.XattrRedirect)); ok && v != "" {
			redirect = v
			cands = append(cands[:i+1:i+1], u.redirectCands(path.Dir(r.path), v, r.layer)...)
			hits = hits[:min(len(hits), i+1)]
		}
	}
	if !found {
		return nil, unix.ENOENT
	}
	if e.metacopy && len(e.lowers) == 0 {
		return nil, fmt.Errorf("metacopy %s: no lower data: %w", path.Join(rel, name), unix.EIO)
	}
	switch {
	case e.isDir() && len(e.lowers) > 0 && e.upper:
		// (a lower-only dir: e.st is of lowers[0] already)
		var st unix.Stat_t
		if err := lstat(u.lowerPath(e.lowers[0]), &st); err == nil {
			e.ino = u.ino(st.Dev, st.Ino)
		}
	case e.upper && e.metacopy:
		e.ino = u.upperIno(u.upperPath(path.Join(rel, name)), &e.st)
	case !e.upper && e.metacopy:
		// a lower metacopy reports the ino of the metacopy file itself
	}
	if e.ino == 0 {
		e.ino = u.ino(e.st.Dev, e.st.Ino)
	}
	return e, nil
}

// redirectCands lists where a redirect leads in every lower layer below
// layer (-1: below the upper). An absolute redirect is a path from the
// layer root; a relative one replaces the last component of dir.
func (u *union) redirectCands(dir, redirect string, layer int) []lref {
	var p string
	if strings.HasPrefix(redirect, "/") {
		p = strings.TrimPrefix(path.Clean(redirect), "/")
	} else {
		p = path.Join(dir, redirect)
	}
	var out []lref
	for l := layer + 1; l < len(u.lowers); l++ {
		out = append(out, lref{l, p})
	}
	return out
}

// upperIno returns the inode number of an upper object: the number of
// its origin in a lower layer if it was copied up (kernel "origin" xattr,
// as kernel overlayfs with xino reports it), else its own.
func (u *union) upperIno(p string, st *unix.Stat_t) uint64 {
	if ino, ok := u.originIno(p, st.Mode&unix.S_IFMT == unix.S_IFDIR); ok {
		return ino
	}
	return u.ino(st.Dev, st.Ino)
}

// dirent is one entry of a merged listing. known: typ and ino are those
// a lookup of the name would report (from the lower name index, for
// names only the lower layers have); else the lookup tells.
type dirent struct {
	name  string
	known bool
	typ   uint32 // S_IFMT bits
	ino   uint64 // union inode number
}

// readDir lists the merged directory rel with state d: upper first, then
// lower dirs; whiteouts removed; each name once. With a lower name index,
// the lower names come from it, with their types and inode numbers.
func (u *union) readDir(rel string, d dirState) ([]dirent, error) {
	if d.index == nil {
		return u.readDirInto(rel, d, d.lowers, map[string]bool{}, nil)
	}
	for _, l := range d.lowers {
		// xattr whiteouts are not in the index: list such dirs
		if u.isXDir(u.lowerPath(l)) {
			return u.readDirInto(rel, d, d.lowers, map[string]bool{}, nil)
		}
	}
	seen := map[string]bool{}
	out, err := u.readDirInto(rel, d, nil, seen, nil)
	if err != nil {
		return nil, err
	}
	d.index.Each(func(name string, top overlay.IndexHit) bool {
		if seen[name] || top.Whiteout {
			return true
		}
		de := dirent{name: name, typ: top.Type}
		if top.Type != 0 {
			// as lookup: the top object's inode number (for a merged
			// dir, its topmost lower dir's)
			de.known = true
			de.ino = u.ino(u.lowerDev[d.lowers[top.Dir].layer], top.Ino)
		}
		out = append(out, de)
		return true
	})
	return out, nil
}

// readDirInto appends to out the names of the upper dir (if d.upper) and
// of the lower dirs lowers that are not in seen, adding them to seen
// (whiteouts too, so that they hide the names below).
func (u *union) readDirInto(rel string, d dirState, lowers []lref, seen map[string]bool, out []dirent) ([]dirent, error) {
	add := func(dir string, isLower bool) error {
		f, err := os.Open(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
				return nil
			}
			return err
		}
		defer f.Close()
		xwo := false
		if isLower {
			if op, _ := u.format.DirOpacity(dir); op == overlay.HasXattrWhiteouts {
				xwo = true
			}
		}
		ents, err := f.ReadDir(-1)
		if err != nil {
			return err
		}
		for _, de := range ents {
			n := de.Name()
			if seen[n] {
				continue
			}
			seen[n] = true
			typ := de.Type()
			// the entry's type is enough but for whiteouts (char devices)
			// and, in opaque="x" dirs, xattr whiteouts (empty files)
			if typ&fs.ModeCharDevice != 0 || typ&fs.ModeType == fs.ModeIrregular || (xwo && typ.IsRegular()) {
				var st unix.Stat_t
				if err := lstat(path.Join(dir, n), &st); err != nil {
					if errors.Is(err, unix.ENOENT) {
						continue
					}
					return err
				}
				if overlay.IsWhiteoutStat(&st) {
					continue
				}
				if xwo {
					if wo, _ := u.format.IsXattrWhiteout(path.Join(dir, n), &st, true); wo {
						continue
					}
				}
			}
			out = append(out, dirent{name: n})
		}
		return nil
	}
	if d.upper {
		dir, done, err := u.safeUpperDir(rel)
		if err != nil {
			return nil, err
		}
		err = add(dir, false)
		done()
		if err != nil {
			return nil, err
		}
	}
	for _, l := range lowers {
		if err := add(u.lowerPath(l), true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// lowerHas reports whether name is visible in the lower dirs of d (that
// is, whether removing or replacing it in the upper needs a whiteout).
func (u *union) lowerHas(d dirState, name string) (bool, error) {
	for _, l := range d.candidates(name) {
		var st unix.Stat_t
		p := path.Join(u.lowerPath(l), name)
		err := lstat(p, &st)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return false, err
		}
		if overlay.IsWhiteoutStat(&st) {
			return false, nil
		}
		if wo, _ := u.format.IsXattrWhiteout(p, &st, u.isXDir(path.Dir(p))); wo {
			return false, nil
		}
		return true, nil
	}
	return false, nil
}

func (u *union) isXDir(dir string) bool {
	op, _ := u.format.DirOpacity(dir)
	return op == overlay.HasXattrWhiteouts
}

// getxattr reads an xattr without following a final symlink. A missing
// attribute yields ("", false, nil).
func getxattr(p, name string) (string, bool, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		switch {
		case err == nil:
			return string(buf[:n]), true, nil
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
			return "", false, nil
		case errors.Is(err, unix.ERANGE):
			sz, err := unix.Lgetxattr(p, name, nil)
			if err != nil {
				return "", false, err
			}
			buf = make([]byte, sz)
		default:
			return "", false, err
		}
	}
}

package overlay

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Dir is the merged view of one union directory: the layers that
// contribute a directory at Path, topmost first. The list stops after the
// first opaque layer, and before a layer where the name is a whiteout or a
// non-directory. Redirected directories (overlay "redirect" xattr) make a
// layer's RealPath differ from Path.
//
// A Dir is a snapshot: it stays valid while the union does not change at
// Path or above (lower layers never change; a copy-up, Remove or rename in
// the upper layer may make it stale). Dirs are immutable; share freely.
type Dir struct {
	Path   string     // cleaned union path, "." for the root
	Layers []DirLayer // contributing layers, topmost first, never empty
}

// DirLayer is one layer's contribution to a Dir.
type DirLayer struct {
	Index    int    // index into Stack.Layers()
	RealPath string // absolute path of the directory in that layer
	// Opaque: the directory is marked opaque="y"; it is the last layer.
	Opaque bool
	// XWhiteouts: the directory is marked opaque="x", so its empty regular
	// files with the overlay "whiteout" xattr are whiteouts. Honoured in
	// lower layers only, as the kernel does; always false for the upper.
	XWhiteouts bool
}

// Entry is the result of a lookup: one union object and where it lives.
type Entry struct {
	Path     string      // cleaned union path, "." for the root
	Layer    int         // serving layer, index into Stack.Layers()
	RealPath string      // absolute path of the object in that layer
	Stat     unix.Stat_t // lstat of RealPath
	Dir      *Dir        // merged directory view, non-nil iff a directory
	Parent   *Dir        // the union dir holding the entry, nil for the root

	// Metacopy: the serving object is a metadata-only copy (overlay
	// "metacopy" xattr, honoured without userxattr only): its metadata is
	// served from RealPath, its data from DataPath in DataLayer.
	Metacopy  bool
	DataPath  string // real path serving file data; RealPath unless Metacopy
	DataLayer int    // layer of DataPath
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Dir != nil }

// unionState is the mutable part of a Stack. Every field guards itself.
type unionState struct {
	rootOnce sync.Once // guards rootDir, rootErr
	rootDir  *Dir
	rootErr  error

	locks   pathLocks     // per-path copy-up/remove locks (copyup.go)
	tmpSeq  atomic.Uint64 // temp name counter in the work dir
	workDir atomic.Bool   // the work/work subdir exists
	noClone sync.Map      // st_dev (uint64) of sources FICLONE failed for

	indexOnce  sync.Once   // guards index
	index      *LowerIndex // lower-layer name index (index.go)
	indexFiles []string    // per lower layer: on-disk index file, or ""
	// siblingIndex: the index files are at IndexPath of each lower.
	siblingIndex bool
}

// cleanPath cleans a union path. Leading slashes are ignored; a path that
// escapes the root, or holds a NUL byte, is ErrInvalidPath. The root is ".".
func cleanPath(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("overlay: path %q: %w", p, ErrInvalidPath)
	}
	c := path.Clean(strings.TrimLeft(p, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("overlay: path %q escapes the root: %w", p, ErrInvalidPath)
	}
	return c, nil
}

func checkName(dir, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("overlay: name %q in %q: %w", name, dir, ErrInvalidPath)
	}
	return nil
}

func unionJoin(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

func notExist(op, p string) error {
	return &os.PathError{Op: "overlay " + op, Path: p, Err: unix.ENOENT}
}

// isUpper reports whether layer index i is the upper layer.
func (s *Stack) isUpper(i int) bool { return i == 0 && s.upper != "" }

// follow reports whether redirect and metacopy xattrs are honoured: the
// kernel turns both off under userxattr.
func (s *Stack) follow() bool { return !s.format.UserXattr }

// root returns the merged root dir, computed once (lower roots never
// change; the upper root's markers are ignored, as by the kernel).
func (s *Stack) root() (*Dir, error) {
	st := &s.state
	st.rootOnce.Do(func() {
		d := &Dir{Path: "."}
		for i, l := range s.layers {
			dl := DirLayer{Index: i, RealPath: l}
			if !s.isUpper(i) {
				o, err := s.format.DirOpacity(l)
				if err != nil {
					st.rootErr = fmt.Errorf("overlay: root of layer %d: %w", i, err)
					return
				}
				dl.XWhiteouts = o == HasXattrWhiteouts
			}
			d.Layers = append(d.Layers, dl)
		}
		st.rootDir = d
	})
	return st.rootDir, st.rootErr
}

// Lookup resolves the union path p. A missing or whited-out name yields an
// error satisfying errors.Is(err, fs.ErrNotExist); a path escaping the
// root yields ErrInvalidPath; a non-directory in the middle of p yields
// unix.ENOTDIR.
func (s *Stack) Lookup(p string) (*Entry, error) {
	c, err := cleanPath(p)
	if err != nil {
		return nil, err
	}
	d, err := s.root()
	if err != nil {
		return nil, err
	}
	if c == "." {
		e := &Entry{Path: ".", Layer: d.Layers[0].Index, RealPath: d.Layers[0].RealPath, Dir: d,
			DataPath: d.Layers[0].RealPath, DataLayer: d.Layers[0].Index}
		if err := unix.Lstat(e.RealPath, &e.Stat); err != nil {
			return nil, &os.PathError{Op: "overlay lookup lstat", Path: e.RealPath, Err: err}
		}
		return e, nil
	}
	for {
		name, rest, more := strings.Cut(c, "/")
		e, err := s.LookupIn(d, name)
		if err != nil {
			return nil, err
		}
		if !more {
			return e, nil
		}
		if e.Dir == nil {
			return nil, &os.PathError{Op: "overlay lookup", Path: e.Path, Err: unix.ENOTDIR}
		}
		d, c = e.Dir, rest
	}
}

// LookupDir resolves p, which must be a directory (else unix.ENOTDIR).
func (s *Stack) LookupDir(p string) (*Dir, error) {
	e, err := s.Lookup(p)
	if err != nil {
		return nil, err
	}
	if e.Dir == nil {
		return nil, &os.PathError{Op: "overlay lookup", Path: e.Path, Err: unix.ENOTDIR}
	}
	return e.Dir, nil
}

// LookupIn resolves one name in the union directory d: the per-directory
// step a FUSE LOOKUP(parent, name) needs. name must be a single component.
func (s *Stack) LookupIn(d *Dir, name string) (*Entry, error) {
	if err := checkName(d.Path, name); err != nil {
		return nil, err
	}
	up := unionJoin(d.Path, name)
	for i := range d.Layers {
		dl := &d.Layers[i]
		rp := dl.RealPath + "/" + name
		var st unix.Stat_t
		if err := unix.Lstat(rp, &st); err != nil {
			if err == unix.ENOENT || err == unix.ENOTDIR {
				continue
			}
			return nil, &os.PathError{Op: "overlay lookup lstat", Path: rp, Err: err}
		}
		wo, err := s.isWhiteout(rp, &st, dl)
		if err != nil {
			return nil, err
		}
		if wo {
			return nil, notExist("lookup", up)
		}
		e := &Entry{Path: up, Layer: dl.Index, RealPath: rp, Stat: st, Parent: d, DataPath: rp, DataLayer: dl.Index}
		c := chase{s: s, parent: d, pos: i + 1, name: name, layer: dl.Index}
		switch e.Stat.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if e.Dir, err = s.mergeDir(up, &c, rp); err != nil {
				return nil, err
			}
		case unix.S_IFREG:
			m, err := readMarks(s.format, rp)
			if err != nil {
				return nil, err
			}
			if m.metacopy && !s.follow() {
				// As the kernel without metacopy=on: "refusing to follow
				// metacopy origin".
				return nil, &os.PathError{Op: "overlay lookup metacopy", Path: up, Err: unix.EPERM}
			}
			if m.metacopy {
				e.Metacopy = true
				if err := s.findData(e, &c, m.redirect); err != nil {
					return nil, err
				}
			}
		}
		return e, nil
	}
	return nil, notExist("lookup", up)
}

// isWhiteout reports whether the object at rp (lstat st) in directory
// layer dl is a whiteout: a char device 0/0 anywhere, or an xattr
// whiteout in a lower directory marked opaque="x".
func (s *Stack) isWhiteout(rp string, st *unix.Stat_t, dl *DirLayer) (bool, error) {
	if IsWhiteoutStat(st) {
		return true, nil
	}
	if !dl.XWhiteouts || s.isUpper(dl.Index) {
		return false, nil
	}
	return s.format.IsXattrWhiteout(rp, st, true)
}

// mergeDir builds the merged Dir whose topmost layer is c.layer at rp.
func (s *Stack) mergeDir(up string, c *chase, rp string) (*Dir, error) {
	d := &Dir{Path: up}
	add := func(idx int, rp string) (stop bool, err error) {
		m, err := readMarks(s.format, rp)
		if err != nil {
			return false, err
		}
		dl := DirLayer{Index: idx, RealPath: rp}
		switch m.opaque {
		case OpaqueYes:
			dl.Opaque = true
		case OpaqueXWhiteout:
			dl.XWhiteouts = !s.isUpper(idx)
		}
		d.Layers = append(d.Layers, dl)
		if dl.Opaque {
			return true, nil
		}
		if m.redirect != "" && !s.follow() && c.more() {
			// As the kernel with redirect_dir=nofollow: "refusing to
			// follow redirect".
			return false, &os.PathError{Op: "overlay lookup redirect", Path: up, Err: unix.EPERM}
		}
		if m.redirect != "" && s.follow() {
			if err := c.redirect(m.redirect); err != nil {
				return false, fmt.Errorf("overlay: dir %q in layer %d: %w", up, idx, err)
			}
		}
		return false, nil
	}
	if stop, err := add(c.layer, rp); err != nil || stop {
		return d, err
	}
	for {
		cand, ok, err := c.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return d, nil
		}
		if cand.whiteout || cand.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return d, nil
		}
		if stop, err := add(cand.layer, cand.rp); err != nil || stop {
			return d, err
		}
	}
}

// findData finds the layer serving the data of the metacopy file e: the
// next lower regular file at the name (or redirect) that is not itself a
// metacopy.
func (s *Stack) findData(e *Entry, c *chase, redirect string) error {
	if redirect != "" {
		if err := c.redirect(redirect); err != nil {
			return fmt.Errorf("overlay: metacopy %q: %w", e.Path, err)
		}
	}
	for {
		cand, ok, err := c.next()
		if err != nil {
			return err
		}
		if !ok || cand.whiteout || cand.st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("overlay: metacopy %q in layer %d has no lower data: %w", e.Path, e.Layer, ErrInconsistent)
		}
		m, err := readMarks(s.format, cand.rp)
		if err != nil {
			return err
		}
		if m.metacopy {
			if m.redirect != "" {
				if err := c.redirect(m.redirect); err != nil {
					return fmt.Errorf("overlay: metacopy %q: %w", e.Path, err)
				}
			}
			continue
		}
		e.DataPath, e.DataLayer = cand.rp, cand.layer
		return nil
	}
}

// chase walks one union name down through the layers below the one where
// it was first found, following redirects as the kernel does: a relative
// redirect renames the entry within the same parent directories; an
// absolute one restarts from the roots of all lower layers below.
type chase struct {
	s      *Stack
	parent *Dir
	pos    int      // relative mode: next index into parent.Layers
	name   string   // relative mode: name looked up in parent's real dirs
	abs    []string // absolute mode: components from the layer roots
	layer  int      // last layer consulted; candidates lie strictly below
	done   bool
}

type candidate struct {
	layer    int
	rp       string
	st       unix.Stat_t
	whiteout bool
}

// redirect applies the redirect xattr value r found at layer c.layer.
func (c *chase) redirect(r string) error {
	if strings.HasPrefix(r, "/") {
		cl := path.Clean(r)
		if cl == "/" || strings.Contains(cl, "/../") || strings.HasSuffix(cl, "/..") || strings.IndexByte(cl, 0) >= 0 {
			return fmt.Errorf("redirect %q: %w", r, ErrInconsistent)
		}
		c.abs = strings.Split(cl[1:], "/")
		return nil
	}
	if checkName("", r) != nil {
		return fmt.Errorf("redirect %q: %w", r, ErrInconsistent)
	}
	if c.abs != nil {
		c.abs[len(c.abs)-1] = r
	} else {
		c.name = r
	}
	return nil
}

// more reports whether layers below c.layer may still be consulted.
func (c *chase) more() bool {
	if c.done {
		return false
	}
	if c.abs != nil {
		return c.layer+1 < len(c.s.layers)
	}
	for _, dl := range c.parent.Layers[c.pos:] {
		if dl.Index > c.layer {
			return true
		}
	}
	return false
}

// next returns the next layer below c.layer where the name exists.
func (c *chase) next() (candidate, bool, error) {
	if c.done {
		return candidate{}, false, nil
	}
	if c.abs == nil {
		for ; c.pos < len(c.parent.Layers); c.pos++ {
			dl := &c.parent.Layers[c.pos]
			if dl.Index <= c.layer {
				continue
			}
			cand := candidate{layer: dl.Index, rp: dl.RealPath + "/" + c.name}
			if err := unix.Lstat(cand.rp, &cand.st); err != nil {
				if err == unix.ENOENT || err == unix.ENOTDIR {
					continue
				}
				return cand, false, &os.PathError{Op: "overlay lookup lstat", Path: cand.rp, Err: err}
			}
			c.pos++
			c.layer = dl.Index
			wo, err := c.s.isWhiteout(cand.rp, &cand.st, dl)
			cand.whiteout = wo
			return cand, true, err
		}
		c.done = true
		return candidate{}, false, nil
	}
	for j := c.layer + 1; j < len(c.s.layers); j++ {
		if c.s.isUpper(j) {
			continue
		}
		cand, found, stop, err := c.walk(j)
		if err != nil {
			return cand, false, err
		}
		c.layer = j
		if stop {
			c.done = true
		}
		if found {
			return cand, true, nil
		}
		if stop {
			return candidate{}, false, nil
		}
	}
	c.done = true
	return candidate{}, false, nil
}

// walk resolves c.abs from the root of layer j without following
// symlinks. stop means no layer below j may be consulted (an intermediate
// component is a whiteout, a non-directory or opaque), as in the kernel.
func (c *chase) walk(j int) (cand candidate, found, stop bool, err error) {
	dl := DirLayer{Index: j, RealPath: c.s.layers[j]}
	if o, err := c.s.format.DirOpacity(dl.RealPath); err != nil {
		return cand, false, false, err
	} else {
		dl.XWhiteouts = o == HasXattrWhiteouts
	}
	for k, comp := range c.abs {
		rp := dl.RealPath + "/" + comp
		var st unix.Stat_t
		if err := unix.Lstat(rp, &st); err != nil {
			if err == unix.ENOENT || err == unix.ENOTDIR {
				return cand, false, stop, nil
			}
			return cand, false, false, &os.PathError{Op: "overlay lookup lstat", Path: rp, Err: err}
		}
		wo, err := c.s.isWhiteout(rp, &st, &dl)
		if err != nil {
			return cand, false, false, err
		}
		if k == len(c.abs)-1 {
			return candidate{layer: j, rp: rp, st: st, whiteout: wo}, true, stop, nil
		}
		if wo || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return cand, false, true, nil
		}
		o, err := c.s.format.DirOpacity(rp)
		if err != nil {
			return cand, false, false, err
		}
		if o == Opaque {
			stop = true
		}
		dl = DirLayer{Index: j, RealPath: rp, XWhiteouts: o == HasXattrWhiteouts}
	}
	return cand, false, stop, nil
}

// Hidden returns the layers below e's serving layer that hold a
// non-whiteout object at e's name and are hidden by it, topmost first. For
// a directory these are the further layers of e.Dir. For the root, and for
// non-directories, it probes the parent's lower layers (lstat each).
func (s *Stack) Hidden(e *Entry) ([]int, error) {
	if e.Dir != nil {
		var out []int
		for _, dl := range e.Dir.Layers[1:] {
			out = append(out, dl.Index)
		}
		return out, nil
	}
	if e.Parent == nil {
		return nil, nil
	}
	var out []int
	name := path.Base(e.Path)
	for i := range e.Parent.Layers {
		dl := &e.Parent.Layers[i]
		if dl.Index <= e.Layer {
			continue
		}
		found, wo, err := s.probe(dl, name)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		if wo {
			return out, nil
		}
		out = append(out, dl.Index)
	}
	return out, nil
}

// HasLower reports whether a lower layer of the union directory d holds a
// non-whiteout object named name: removing name from the upper layer then
// needs a whiteout (the kernel's "lower positive" test).
func (s *Stack) HasLower(d *Dir, name string) (bool, error) {
	if err := checkName(d.Path, name); err != nil {
		return false, err
	}
	for i := range d.Layers {
		dl := &d.Layers[i]
		if s.isUpper(dl.Index) {
			continue
		}
		found, wo, err := s.probe(dl, name)
		if err != nil || found {
			return found && !wo, err
		}
	}
	return false, nil
}

// probe reports whether layer dir dl holds name, and whether that entry
// is a whiteout (in any form dl honours).
func (s *Stack) probe(dl *DirLayer, name string) (found, whiteout bool, err error) {
	rp := dl.RealPath + "/" + name
	var st unix.Stat_t
	if err := unix.Lstat(rp, &st); err != nil {
		if err == unix.ENOENT || err == unix.ENOTDIR {
			return false, false, nil
		}
		return false, false, &os.PathError{Op: "overlay lstat", Path: rp, Err: err}
	}
	wo, err := s.isWhiteout(rp, &st, dl)
	return true, wo, err
}

// marks are the overlay xattrs of one object that lookup cares about.
type marks struct {
	opaque   string
	redirect string
	metacopy bool
}

// readMarks reads the overlay markers of p with one listxattr in the
// common case of an object without overlay xattrs.
func readMarks(f Format, p string) (marks, error) {
	var m marks
	var buf [512]byte
	list := buf[:]
	n, err := unix.Llistxattr(p, list)
	if err == unix.ERANGE {
		n, err = unix.Llistxattr(p, nil)
		if err == nil {
			list = make([]byte, n)
			n, err = unix.Llistxattr(p, list)
		}
	}
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return m, nil
		}
		return m, &os.PathError{Op: "overlay listxattr", Path: p, Err: err}
	}
	prefix := f.Prefix()
	for rest := list[:n]; len(rest) > 0; {
		i := 0
		for i < len(rest) && rest[i] != 0 {
			i++
		}
		name := rest[:i]
		if i < len(rest) {
			rest = rest[i+1:]
		} else {
			rest = nil
		}
		if len(name) <= len(prefix) || string(name[:len(prefix)]) != prefix {
			continue
		}
		switch string(name[len(prefix):]) {
		case XattrOpaque:
			m.opaque, _, err = getxattr(p, f.Xattr(XattrOpaque))
		case XattrRedirect:
			m.redirect, _, err = getxattr(p, f.Xattr(XattrRedirect))
		case XattrMetacopy:
			m.metacopy = true
		}
		if err != nil {
			return m, err
		}
	}
	return m, nil
}

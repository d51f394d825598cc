package overlay

import (
	"bufio"
	"bytes"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Lower-layer name index.
//
// Lower layers never change while a stack is in use, so what a merged
// lower directory holds can be read once and then answered from memory: a
// DirIndex maps every name of a merged lower dir to the layers that hold
// it (topmost first, up to and including a whiteout), built with one
// getdents per layer instead of an lstat per layer per looked-up name.
// A lookup of a missing name then costs one map probe at any depth, and a
// present one an lstat of the layers that actually hold it.
//
// The index records only what the directory entries say (d_type, d_ino)
// plus whiteout devices (an fstatat for DT_CHR entries only). Everything
// that needs xattrs (opaque subdirs, redirects, metacopy, xattr
// whiteouts in opaque="x" dirs) stays with the caller, which reads it only
// for the layers a hit names.
//
// A committed layer can carry its index on disk (WriteIndexFile at
// commit, ReadIndexFile at mount, LowerIndex.UseLayerIndex): then not even
// the getdents are needed.

// LowerDir names one directory in one lower layer.
type LowerDir struct {
	Layer int    // index into Stack.Lowers()
	Path  string // slash path relative to the layer root; "" is the root
}

// IndexHit is one layer's entry for a name in a merged lower dir.
type IndexHit struct {
	Dir      int    // position in the []LowerDir the DirIndex was built from
	Type     uint32 // S_IFMT bits; 0 if the type is unknown
	Whiteout bool   // a whiteout (char device 0/0): the name stops here
	Ino      uint64 // d_ino in that layer
	// Plain: the entry is known to carry no overlay xattr (trusted. or
	// user.overlay.*): not opaque, no redirect, not a metadata-only
	// copy, not an xattr whiteout. Known only from an on-disk index
	// (version 2); false means unknown.
	Plain bool
}

type hitRec struct {
	IndexHit
	next int32 // next hit of the same name, -1 at the end
}

// DirIndex is the immutable name index of one merged lower dir.
type DirIndex struct {
	first map[string]int32 // name -> index of its first hit
	hits  []hitRec
	order []string // names in first-seen order (readdir)
}

// Hits appends the hits for name to buf (topmost first) and returns it;
// an absent name yields buf unchanged.
func (d *DirIndex) Hits(name string, buf []IndexHit) []IndexHit {
	i, ok := d.first[name]
	if !ok {
		return buf
	}
	for ; i >= 0; i = d.hits[i].next {
		buf = append(buf, d.hits[i].IndexHit)
	}
	return buf
}

// Has reports whether any layer has an entry named name (a whiteout
// counts: use Hits to tell).
func (d *DirIndex) Has(name string) bool { _, ok := d.first[name]; return ok }

// Visible reports whether name is visible in the merged lower dir, as far
// as the entries tell: its top hit is not a whiteout. Xattr whiteouts
// (opaque="x" dirs) are not seen here.
func (d *DirIndex) Visible(name string) bool {
	i, ok := d.first[name]
	return ok && !d.hits[i].Whiteout
}

// Len is the number of distinct names (whiteouts included).
func (d *DirIndex) Len() int { return len(d.order) }

// Each calls fn for every name with its top hit, in first-seen order,
// until fn returns false.
func (d *DirIndex) Each(fn func(name string, top IndexHit) bool) {
	for _, n := range d.order {
		if !fn(n, d.hits[d.first[n]].IndexHit) {
			return
		}
	}
}

func (d *DirIndex) add(name string, h IndexHit) {
	i, ok := d.first[name]
	if !ok {
		d.first[name] = int32(len(d.hits)) //nolint:gosec // hits of one dir stay far below 2^31
		d.order = append(d.order, name)
		d.hits = append(d.hits, hitRec{h, -1})
		return
	}
	for {
		r := &d.hits[i]
		if r.Whiteout {
			return // hidden below a whiteout
		}
		if r.next < 0 {
			r.next = int32(len(d.hits)) //nolint:gosec // hits of one dir stay far below 2^31
			d.hits = append(d.hits, hitRec{h, -1})
			return
		}
		i = r.next
	}
}

// DefaultIndexDirs bounds the dirs a LowerIndex keeps in memory.
const DefaultIndexDirs = 4096

// LowerIndex builds and caches DirIndexes for the lower layers of a
// stack, least recently used dirs evicted beyond its bound. Safe for
// concurrent use.
type LowerIndex struct {
	lowers []string
	max    int

	mu     sync.Mutex
	m      map[string]*list.Element // key(dirs) -> *lruItem
	lru    list.List                // front: most recently used
	layers []*LayerIndex            // on-disk indexes, per lower layer; nil if none
}

type lruItem struct {
	key string
	idx *DirIndex
}

// NewLowerIndex returns an empty index over lowers (topmost first, as
// Stack.Lowers), keeping at most maxDirs dirs (<= 0: DefaultIndexDirs).
func NewLowerIndex(lowers []string, maxDirs int) *LowerIndex {
	if maxDirs <= 0 {
		maxDirs = DefaultIndexDirs
	}
	return &LowerIndex{lowers: lowers, max: maxDirs, m: map[string]*list.Element{}, layers: make([]*LayerIndex, len(lowers))}
}

// WithLowerIndexFiles gives the on-disk indexes (WriteIndexFile) of the
// lower layers, one per lower layer in Lowers order, "" for none. They are
// read on the first use of the stack's LowerIndex; a missing, corrupt or
// foreign file (ErrIndexInvalid) is skipped and that layer listed instead,
// as the index is only a cache of what the layer dir says.
func WithLowerIndexFiles(files []string) StackOption {
	return func(s *Stack) { s.state.indexFiles = files }
}

// IndexSuffix names a layer's on-disk index by convention: the index of
// the layer dir L is the file L+IndexSuffix next to it (IndexPath). The
// snapshotter writes it when it commits a layer; a FUSE mount reads it
// when present (WithSiblingIndexFiles), so a committed layer is never
// listed again. Only immutable layers may carry one: ReadIndex checks that
// the file was written for the same dir (root dev and inode), not that
// the dir is unchanged since.
const IndexSuffix = ".strata-index"

// IndexPath returns where the on-disk index of the layer dir layerDir
// lives by convention (see IndexSuffix).
func IndexPath(layerDir string) string { return filepath.Clean(layerDir) + IndexSuffix }

// WithSiblingIndexFiles makes the stack use each lower layer's index at
// IndexPath when one is there (see WithLowerIndexFiles for how a missing
// or invalid one is handled). It overrides WithLowerIndexFiles.
func WithSiblingIndexFiles() StackOption {
	return func(s *Stack) { s.state.siblingIndex = true }
}

// LowerIndex returns the stack's shared lower-layer index.
func (s *Stack) LowerIndex() *LowerIndex {
	s.state.indexOnce.Do(func() {
		x := NewLowerIndex(s.lowers, 0)
		files := s.state.indexFiles
		if s.state.siblingIndex {
			files = make([]string, len(s.lowers))
			for i, l := range s.lowers {
				files[i] = IndexPath(l)
			}
		}
		for i, f := range files {
			if f == "" || i >= len(s.lowers) {
				continue
			}
			if li, err := ReadIndexFile(f, s.lowers[i]); err == nil {
				x.UseLayerIndex(i, li)
			}
		}
		s.state.index = x
	})
	return s.state.index
}

// LayerIndexed reports whether lower layer i is answered from an on-disk
// index.
func (x *LowerIndex) LayerIndexed(i int) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return i >= 0 && i < len(x.layers) && x.layers[i] != nil
}

// UseLayerIndex makes the index read lower layer i's dirs from li (see
// ReadIndexFile) instead of listing them.
func (x *LowerIndex) UseLayerIndex(i int, li *LayerIndex) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i >= 0 && i < len(x.layers) {
		x.layers[i] = li
	}
}

func indexKey(dirs []LowerDir) string {
	var b strings.Builder
	for _, d := range dirs {
		b.WriteString(strconv.Itoa(d.Layer))
		b.WriteByte(0)
		b.WriteString(d.Path)
		b.WriteByte(0)
	}
	return b.String()
}

// Dir returns the index of the merged lower dir made of dirs (topmost
// first; the caller has already cut the list at an opaque dir), building
// it on first use.
func (x *LowerIndex) Dir(dirs []LowerDir) (*DirIndex, error) {
	k := indexKey(dirs)
	x.mu.Lock()
	if el, ok := x.m[k]; ok {
		x.lru.MoveToFront(el)
		idx := el.Value.(*lruItem).idx
		x.mu.Unlock()
		return idx, nil
	}
	layers := x.layers
	x.mu.Unlock()
	idx, err := x.build(dirs, layers)
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if el, ok := x.m[k]; ok { // built concurrently
		return el.Value.(*lruItem).idx, nil
	}
	x.m[k] = x.lru.PushFront(&lruItem{k, idx})
	for x.lru.Len() > x.max {
		el := x.lru.Back()
		x.lru.Remove(el)
		delete(x.m, el.Value.(*lruItem).key)
	}
	return idx, nil
}

// Lookup returns the hits for name in the merged lower dir dirs.
func (x *LowerIndex) Lookup(dirs []LowerDir, name string) ([]IndexHit, error) {
	d, err := x.Dir(dirs)
	if err != nil {
		return nil, err
	}
	return d.Hits(name, nil), nil
}

func (x *LowerIndex) build(dirs []LowerDir, layers []*LayerIndex) (*DirIndex, error) {
	d := &DirIndex{first: map[string]int32{}}
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	for k, ld := range dirs {
		if ld.Layer < 0 || ld.Layer >= len(x.lowers) {
			return nil, fmt.Errorf("overlay: index: layer %d out of range: %w", ld.Layer, ErrInvalidPath)
		}
		rel := strings.Trim(ld.Path, "/")
		if rel == "." {
			rel = ""
		}
		if li := layers[ld.Layer]; li != nil {
			if ents, ok := li.dirs[rel]; ok {
				for _, e := range ents {
					d.add(e.name, IndexHit{Dir: k, Type: e.typ, Whiteout: e.whiteout, Ino: e.ino, Plain: e.plain})
				}
				continue
			}
		}
		dir := path.Join(x.lowers[ld.Layer], rel)
		err := listLayerDir(dir, *bp, func(name string, typ uint32, wo bool, ino uint64) {
			d.add(name, IndexHit{Dir: k, Type: typ, Whiteout: wo, Ino: ino})
		})
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue // not a dir (any more) in this layer: contributes nothing
		}
		if err != nil {
			return nil, fmt.Errorf("overlay: index %s: %w", dir, err)
		}
	}
	return d, nil
}

// listLayerDir lists one real dir with types and whiteouts resolved.
func listLayerDir(dir string, buf []byte, fn func(name string, typ uint32, whiteout bool, ino uint64)) error {
	return readDirents(dir, buf, func(fd int, name []byte, dt uint8, ino uint64) error {
		typ := dtypeIFMT(dt)
		wo := false
		if dt == unix.DT_CHR || dt == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					return nil
				}
				return &os.PathError{Op: "lstat", Path: path.Join(dir, string(name)), Err: err}
			}
			typ = st.Mode & unix.S_IFMT
			wo = IsWhiteoutStat(&st)
		}
		fn(string(name), typ, wo, ino)
		return nil
	})
}

func dtypeIFMT(t uint8) uint32 {
	switch t {
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return 0
}

// On-disk form.
//
// An index file describes one layer dir (written when the layer is
// committed and never changes after). It lives outside the layer dir (it
// must not show in the union), e.g. next to it in the snapshot dir.
//
//	"STRATA-LAYER-INDEX\x00\x02"          magic, version 2 (1 is read too)
//	uvarint root dev, uvarint root ino     identity of the layer root
//	uvarint ndirs
//	per dir (any order):
//	  string path                          "" for the root, no leading "/"
//	  uvarint nentries
//	  per entry: string name, byte type (S_IFMT >> 12, bit 7 = whiteout,
//	             bit 6 = plain: no overlay xattr; version 2 only),
//	             uvarint d_ino
//	u32 little-endian CRC-32 (IEEE) of everything above
//
// string = uvarint length, then the bytes.

const (
	indexMagic   = "STRATA-LAYER-INDEX\x00\x02"
	indexMagicV1 = "STRATA-LAYER-INDEX\x00\x01" // no plain bit
)

// Bits of an entry's type byte besides S_IFMT >> 12.
const (
	indexWhiteoutBit = 0x80
	indexPlainBit    = 0x40
)

// ErrIndexInvalid: an index file is corrupt, of another version, or for
// another layer dir.
var ErrIndexInvalid = errors.New("overlay: invalid layer index")

// LayerIndex is a layer's on-disk index loaded in memory.
type LayerIndex struct {
	dirs map[string][]layerEnt
}

type layerEnt struct {
	name     string
	typ      uint32
	whiteout bool
	plain    bool // no overlay xattr (see IndexHit.Plain)
	ino      uint64
}

// Dirs is the number of dirs the index describes.
func (li *LayerIndex) Dirs() int { return len(li.dirs) }

// BuildLayerIndex lists every dir of the layer at layerDir (not following
// symlinks), and, run as root, checks each entry but whiteouts for
// overlay xattrs (one llistxattr each), so that a lookup through the
// index can skip the xattr reads of plain entries. (Others do not see
// trusted.* names, so their index marks no entry plain.)
func BuildLayerIndex(layerDir string) (*LayerIndex, error) {
	checkXattrs := os.Geteuid() == 0
	li := &LayerIndex{dirs: map[string][]layerEnt{}}
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	var walk func(rel string) error
	walk = func(rel string) error {
		var ents []layerEnt
		var sub []string
		dir := path.Join(layerDir, rel)
		var xerr error
		err := listLayerDir(dir, *bp, func(name string, typ uint32, wo bool, ino uint64) {
			plain := false
			if checkXattrs && !wo && xerr == nil {
				plain, xerr = noOverlayXattr(path.Join(dir, name))
			}
			ents = append(ents, layerEnt{name, typ, wo, plain, ino})
			if typ == unix.S_IFDIR {
				sub = append(sub, path.Join(rel, name))
			}
		})
		if err == nil {
			err = xerr
		}
		if err != nil {
			return err
		}
		li.dirs[rel] = ents
		for _, s := range sub {
			if err := walk(s); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, fmt.Errorf("overlay: index layer %s: %w", layerDir, err)
	}
	return li, nil
}

// noOverlayXattr reports whether the object at p (not followed) has no
// xattr in the overlay namespaces. A filesystem without xattrs has none.
func noOverlayXattr(p string) (bool, error) {
	var buf [1024]byte
	dest := buf[:]
	for {
		n, err := unix.Llistxattr(p, dest)
		switch {
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.ERANGE):
			sz, err := unix.Llistxattr(p, nil)
			if err != nil {
				return false, &os.PathError{Op: "llistxattr", Path: p, Err: err}
			}
			dest = make([]byte, sz+256)
			continue
		case errors.Is(err, unix.ENOTSUP):
			return true, nil
		case err != nil:
			return false, &os.PathError{Op: "llistxattr", Path: p, Err: err}
		}
		for _, name := range bytes.Split(dest[:n], []byte{0}) {
			if len(name) > 0 && IsOverlayXattr(string(name)) {
				return false, nil
			}
		}
		return true, nil
	}
}

func rootID(layerDir string) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(layerDir, &st); err != nil {
		return 0, 0, &os.PathError{Op: "stat", Path: layerDir, Err: err}
	}
	return st.Dev, st.Ino, nil
}

// WriteIndex writes the on-disk index of the layer at layerDir to w.
func WriteIndex(layerDir string, w io.Writer) error {
	li, err := BuildLayerIndex(layerDir)
	if err != nil {
		return err
	}
	dev, ino, err := rootID(layerDir)
	if err != nil {
		return err
	}
	crc := crc32.NewIEEE()
	bw := bufio.NewWriter(io.MultiWriter(w, crc))
	var tmp [binary.MaxVarintLen64]byte
	// A bufio.Writer keeps its first error and Flush returns it: the
	// writes below are checked there.
	uv := func(v uint64) { _, _ = bw.Write(tmp[:binary.PutUvarint(tmp[:], v)]) }
	str := func(s string) { uv(uint64(len(s))); _, _ = bw.WriteString(s) }
	_, _ = bw.WriteString(indexMagic)
	uv(dev)
	uv(ino)
	uv(uint64(len(li.dirs)))
	for p, ents := range li.dirs {
		str(p)
		uv(uint64(len(ents)))
		for _, e := range ents {
			str(e.name)
			t := byte(e.typ >> 12) //nolint:gosec // S_IFMT>>12 is 4 bits
			if e.whiteout {
				t |= indexWhiteoutBit
			}
			if e.plain {
				t |= indexPlainBit
			}
			_ = bw.WriteByte(t)
			uv(e.ino)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("overlay: write index of %s: %w", layerDir, err)
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc.Sum32())
	if _, err := w.Write(sum[:]); err != nil {
		return fmt.Errorf("overlay: write index of %s: %w", layerDir, err)
	}
	return nil
}

// WriteIndexFile writes the index of layerDir to file atomically (temp
// file, fsync, rename).
func WriteIndexFile(layerDir, file string) error {
	tmp := file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("overlay: index file: %w", err)
	}
	err = WriteIndex(layerDir, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort: a stale temp is rewritten next time
		return fmt.Errorf("overlay: index file %s: %w", file, err)
	}
	return nil
}

// ReadIndex reads an index written by WriteIndex and checks it belongs
// to the layer at layerDir (same root dev and inode).
func ReadIndex(r io.Reader, layerDir string) (*LayerIndex, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("overlay: read index of %s: %w", layerDir, err)
	}
	bad := func(why string) error {
		return fmt.Errorf("overlay: index of %s: %s: %w", layerDir, why, ErrIndexInvalid)
	}
	if len(data) < len(indexMagic)+4 {
		return nil, bad("bad magic")
	}
	v2 := bytes.HasPrefix(data, []byte(indexMagic))
	if !v2 && !bytes.HasPrefix(data, []byte(indexMagicV1)) {
		return nil, bad("bad magic")
	}
	body := data[:len(data)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, bad("checksum mismatch")
	}
	b := body[len(indexMagic):]
	fail := false
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			fail = true
			return 0
		}
		b = b[n:]
		return v
	}
	str := func() string {
		n := uv()
		if fail || n > uint64(len(b)) {
			fail = true
			return ""
		}
		s := string(b[:n])
		b = b[n:]
		return s
	}
	dev, ino := uv(), uv()
	rdev, rino, err := rootID(layerDir)
	if err != nil {
		return nil, err
	}
	if !fail && (dev != rdev || ino != rino) {
		return nil, bad("written for another dir")
	}
	nd := uv()
	if fail || nd > uint64(len(b)) {
		return nil, bad("truncated")
	}
	li := &LayerIndex{dirs: make(map[string][]layerEnt, nd)}
	for i := uint64(0); i < nd && !fail; i++ {
		p := str()
		ne := uv()
		if fail || ne > uint64(len(b)) {
			return nil, bad("truncated")
		}
		ents := make([]layerEnt, 0, ne)
		for j := uint64(0); j < ne && !fail; j++ {
			name := str()
			if len(b) == 0 {
				fail = true
				break
			}
			t := b[0]
			b = b[1:]
			e := layerEnt{name: name, whiteout: t&indexWhiteoutBit != 0, ino: uv()}
			if v2 {
				e.plain = t&indexPlainBit != 0
				t &^= indexPlainBit
			}
			e.typ = uint32(t&^indexWhiteoutBit) << 12
			ents = append(ents, e)
		}
		li.dirs[p] = ents
	}
	if fail || len(b) != 0 {
		return nil, bad("truncated")
	}
	return li, nil
}

// ReadIndexFile reads the index file of the layer at layerDir.
func ReadIndexFile(file, layerDir string) (*LayerIndex, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("overlay: index file: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only
	return ReadIndex(f, filepath.Clean(layerDir))
}

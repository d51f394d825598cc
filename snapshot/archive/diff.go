package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// DiffOption configures WriteDiff and DiffStat.
type DiffOption func(*diffConfig)

type diffConfig struct {
	compression Compression
	level       int
	format      overlay.Format
}

// WithCompression compresses WriteDiff's output (default Uncompressed).
func WithCompression(c Compression) DiffOption { return func(d *diffConfig) { d.compression = c } }

// WithCompressionLevel sets the gzip level (1-9) or zstd level (1-22);
// 0 is the codec's default.
func WithCompressionLevel(l int) DiffOption { return func(d *diffConfig) { d.level = l } }

// WithDiffFormat says which overlay xattr namespace the layers use
// (default trusted.overlay.*).
func WithDiffFormat(f overlay.Format) DiffOption { return func(d *diffConfig) { d.format = f } }

// DiffSummary describes a written diff.
type DiffSummary struct {
	Compression      Compression
	Digest           digest.Digest // of the bytes written to w
	DiffID           digest.Digest // of the uncompressed tar
	Size             int64         // bytes written to w
	UncompressedSize int64
	Entries          int // tar entries written
	Whiteouts        int // ".wh.NAME" entries
	OpaqueDirs       int // ".wh..wh..opq" entries
	RedirectedDirs   int // renamed lower dirs written in full
	MetacopyFiles    int // metacopy files written with their lower data
}

// ChangeKind classifies a path of a layer against its lowers.
type ChangeKind int

const (
	Added    ChangeKind = iota // not in any lower layer
	Modified                   // in a lower layer, changed or replaced
	Deleted                    // in a lower layer, removed by this one
)

func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "A"
	case Modified:
		return "M"
	}
	return "D"
}

// Change is one changed path.
type Change struct {
	Path string // slash-separated, relative to the root
	Kind ChangeKind
}

// Stat summarizes a layer's changes (strata diff --stat).
type Stat struct {
	Added, Modified, Deleted int
	Changes                  []Change // in WriteDiff's order
}

// WriteDiff writes the changes of the overlay layer layerDir to w as an OCI
// layer tar. lowers are the layers below it, topmost first; they are read
// only to resolve metacopy files and redirected directories. Only
// layerDir is walked. The output is deterministic for a given layer.
func WriteDiff(ctx context.Context, w io.Writer, layerDir string, lowers []string, opts ...DiffOption) (DiffSummary, error) {
	var cfg diffConfig
	for _, o := range opts {
		o(&cfg)
	}
	sum := DiffSummary{Compression: cfg.compression}
	compressed := &countingDigester{d: digest.Canonical.Digester()}
	cw, err := compressor(cfg.compression, io.MultiWriter(w, compressed), cfg.level)
	if err != nil {
		return sum, fmt.Errorf("write diff of %s: %w", layerDir, err)
	}
	uncompressed := &countingDigester{d: digest.Canonical.Digester()}
	tarOut := io.MultiWriter(cw, uncompressed)
	if cfg.compression == Uncompressed {
		tarOut = cw // the diff ID is the digest: hash once
	}
	// Compression and hashing run in the write-behind goroutine.
	bw := newWriteBehind(tarOut, 4, 256<<10)
	defer func() { _ = bw.Close() }() // checked below on success
	tw := tar.NewWriter(bw)
	e := newExporter(ctx, layerDir, lowers, cfg.format)
	e.tw, e.sum = tw, &sum
	if err := e.walkUpper(""); err != nil {
		return sum, fmt.Errorf("write diff of %s: %w", layerDir, err)
	}
	for _, f := range []func() error{tw.Close, bw.Close, cw.Close} {
		if err := f(); err != nil {
			return sum, fmt.Errorf("write diff of %s: %w", layerDir, err)
		}
	}
	sum.Digest, sum.Size = compressed.d.Digest(), compressed.n
	sum.DiffID, sum.UncompressedSize = uncompressed.d.Digest(), uncompressed.n
	if cfg.compression == Uncompressed {
		sum.DiffID, sum.UncompressedSize = sum.Digest, sum.Size
	}
	return sum, nil
}

// DiffStat lists the changes WriteDiff would write, classified against
// lowers: a path that exists in a lower layer is Modified, else Added;
// whiteouts and the lower children hidden by an opaque dir are Deleted.
func DiffStat(ctx context.Context, layerDir string, lowers []string, opts ...DiffOption) (Stat, error) {
	var cfg diffConfig
	for _, o := range opts {
		o(&cfg)
	}
	e := newExporter(ctx, layerDir, lowers, cfg.format)
	e.stat = &Stat{}
	if err := e.walkUpper(""); err != nil {
		return *e.stat, fmt.Errorf("diff stat of %s: %w", layerDir, err)
	}
	return *e.stat, nil
}

type devIno struct{ dev, ino uint64 }

// src is a directory entry in one layer: layers[layer]/path.
type src struct {
	layer int
	path  string // relative, "" for the root
}

// exporter walks one layer. layers[0] is the layer, the rest its lowers.
type exporter struct {
	ctx    context.Context
	layers []string
	format overlay.Format
	tw     *tar.Writer // nil for DiffStat
	sum    *DiffSummary
	stat   *Stat
	buf    []byte
	links  map[devIno]string
	n      int
}

func newExporter(ctx context.Context, layer string, lowers []string, f overlay.Format) *exporter {
	return &exporter{
		ctx:    ctx,
		layers: append([]string{layer}, lowers...),
		format: f,
		links:  map[devIno]string{},
		sum:    &DiffSummary{},
	}
}

func (e *exporter) full(s src) string {
	if s.path == "" {
		return e.layers[s.layer]
	}
	return e.layers[s.layer] + "/" + s.path
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func readNames(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("readdir %s: %w", p, err)
	}
	sort.Strings(names)
	return names, nil
}

func lstat(p string) (unix.Stat_t, bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	if err == nil {
		return st, true, nil
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return st, false, nil
	}
	return st, false, &os.PathError{Op: "lstat", Path: p, Err: err}
}

func (e *exporter) change(p string, k ChangeKind) {
	if e.stat == nil {
		return
	}
	switch k {
	case Added:
		e.stat.Added++
	case Modified:
		e.stat.Modified++
	case Deleted:
		e.stat.Deleted++
	}
	e.stat.Changes = append(e.stat.Changes, Change{Path: p, Kind: k})
}

func (e *exporter) inLowers(p string) (bool, error) {
	r, err := e.lookupPath(1, p)
	return r.found, err
}

func (e *exporter) tick() error {
	e.n++
	if e.n&255 == 0 {
		return e.ctx.Err()
	}
	return nil
}

// walkUpper writes the entries of layers[0]/rel, recursively.
func (e *exporter) walkUpper(rel string) error {
	dirPath := e.full(src{0, rel})
	names, err := readNames(dirPath)
	if err != nil {
		return err
	}
	opacity, err := e.format.DirOpacity(dirPath)
	if err != nil {
		return err
	}
	if rel == "" && opacity == overlay.Opaque {
		if err := e.opaqueMarker("", time.Time{}); err != nil {
			return err
		}
	}
	for _, name := range names {
		if err := e.tick(); err != nil {
			return err
		}
		p := join(rel, name)
		s := src{0, p}
		st, _, err := lstat(e.full(s))
		if err != nil {
			return err
		}
		wh, err := e.isWhiteout(s, &st, opacity == overlay.HasXattrWhiteouts)
		if err != nil {
			return err
		}
		if wh {
			if err := e.whiteout(rel, name, &st); err != nil {
				return err
			}
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			data := s
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				if data, err = e.dataOf(s); err != nil {
					return err
				}
			}
			if err := e.classify(p); err != nil {
				return err
			}
			if err := e.node(p, s, &st, data); err != nil {
				return err
			}
			continue
		}
		redirect, ok, err := e.format.Redirect(e.full(s))
		if err != nil {
			return err
		}
		if ok {
			// A renamed lower dir: the consumer has no redirect, so write
			// its merged content in full, opaque over whatever the new
			// name had below.
			target := strings.TrimPrefix(redirect, "/")
			if !strings.HasPrefix(redirect, "/") {
				target = join(rel, redirect)
			}
			lower, err := e.lookupPath(1, target)
			if err != nil {
				return err
			}
			srcs := []src{s}
			if lower.found && lower.isDir {
				if op, err := e.format.DirOpacity(e.full(s)); err != nil {
					return err
				} else if op != overlay.Opaque {
					srcs = append(srcs, lower.dirs...)
				}
			}
			e.sum.RedirectedDirs++
			if err := e.classify(p); err != nil {
				return err
			}
			if err := e.node(p, s, &st, s); err != nil {
				return err
			}
			if err := e.opaqueMarker(p, time.Unix(st.Mtim.Unix())); err != nil {
				return err
			}
			if err := e.walkMerged(p, srcs); err != nil {
				return err
			}
			continue
		}
		if err := e.classify(p); err != nil {
			return err
		}
		if err := e.node(p, s, &st, s); err != nil {
			return err
		}
		op, err := e.format.DirOpacity(e.full(s))
		if err != nil {
			return err
		}
		if op == overlay.Opaque {
			if err := e.opaqueMarker(p, time.Unix(st.Mtim.Unix())); err != nil {
				return err
			}
			if err := e.hiddenByOpaque(p, s); err != nil {
				return err
			}
		}
		if err := e.walkUpper(p); err != nil {
			return err
		}
	}
	return nil
}

func (e *exporter) classify(p string) error {
	if e.stat == nil {
		return nil
	}
	in, err := e.inLowers(p)
	if err != nil {
		return err
	}
	if in {
		e.change(p, Modified)
	} else {
		e.change(p, Added)
	}
	return nil
}

// hiddenByOpaque records, for DiffStat, the lower children of an opaque
// dir that the layer does not have itself.
func (e *exporter) hiddenByOpaque(p string, s src) error {
	if e.stat == nil {
		return nil
	}
	lower, err := e.lookupPath(1, p)
	if err != nil || !lower.found || !lower.isDir {
		return err
	}
	names, err := e.unionNames(lower.dirs)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, ok, err := lstat(e.full(src{0, join(p, n)})); err != nil {
			return err
		} else if ok {
			continue
		}
		r, err := e.lookupChild(lower.dirs, n)
		if err != nil {
			return err
		}
		if r.found {
			e.change(join(p, n), Deleted)
		}
	}
	return nil
}

func (e *exporter) isWhiteout(s src, st *unix.Stat_t, parentX bool) (bool, error) {
	if overlay.IsWhiteoutStat(st) {
		return true, nil
	}
	if !parentX {
		return false, nil
	}
	return e.format.IsXattrWhiteout(e.full(s), st, true)
}

// walkMerged writes the merged content of a directory whose sources are
// srcs (topmost first), as a reader of the union would see it.
func (e *exporter) walkMerged(rel string, srcs []src) error {
	names, err := e.unionNames(srcs)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := e.tick(); err != nil {
			return err
		}
		r, err := e.lookupChild(srcs, name)
		if err != nil {
			return err
		}
		if !r.found {
			continue
		}
		p := join(rel, name)
		if err := e.classify(p); err != nil {
			return err
		}
		if r.isDir {
			if err := e.node(p, r.dirs[0], &r.st, r.dirs[0]); err != nil {
				return err
			}
			if err := e.walkMerged(p, r.dirs); err != nil {
				return err
			}
			continue
		}
		if r.data != r.meta {
			e.sum.MetacopyFiles++
		}
		if err := e.node(p, r.meta, &r.st, r.data); err != nil {
			return err
		}
	}
	return nil
}

func (e *exporter) unionNames(srcs []src) ([]string, error) {
	if len(srcs) == 1 {
		return readNames(e.full(srcs[0]))
	}
	set := map[string]struct{}{}
	for _, s := range srcs {
		names, err := readNames(e.full(s))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			set[n] = struct{}{}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// lookupResult is what a union lookup of one name finds.
type lookupResult struct {
	found, isDir bool
	st           unix.Stat_t // of the topmost entry
	dirs         []src       // a directory's sources, topmost first
	meta, data   src         // a non-directory's metadata and data source
}

// lookupChild looks name up in the directory whose sources are parent,
// with overlayfs's rules: the topmost entry wins; a whiteout ends the
// search; a directory merges with lower directories of the same name
// until an opaque one; a redirect sends the search in lower layers to
// another path; a metacopy file takes its data from below.
func (e *exporter) lookupChild(parent []src, name string) (lookupResult, error) {
	var r lookupResult
	look := name      // name looked up in the following parent sources
	needData := false // a metacopy file was found; find its data
	for k := 0; k < len(parent); k++ {
		ps := parent[k]
		s := src{ps.layer, join(ps.path, look)}
		st, ok, err := lstat(e.full(s))
		if err != nil {
			return r, err
		}
		if !ok {
			continue
		}
		wh := overlay.IsWhiteoutStat(&st)
		if !wh && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
			op, err := e.format.DirOpacity(e.full(ps))
			if err != nil {
				return r, err
			}
			if wh, err = e.isWhiteout(s, &st, op == overlay.HasXattrWhiteouts); err != nil {
				return r, err
			}
		}
		if wh {
			break
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		switch {
		case !r.found && !isDir:
			r.found, r.st, r.meta, r.data = true, st, s, s
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				return r, nil
			}
			fallthrough
		case needData:
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				return r, fmt.Errorf("data of metacopy file %s: lower %s is not a regular file: %w", e.full(r.meta), e.full(s), ErrInvalidArchive)
			}
			meta, err := e.format.IsMetacopy(e.full(s))
			if err != nil {
				return r, err
			}
			if !meta {
				r.data = s
				return r, nil
			}
			needData = true
			redirect, ok, err := e.format.Redirect(e.full(s))
			if err != nil {
				return r, err
			}
			if ok && strings.HasPrefix(redirect, "/") {
				d, err := e.lookupPath(s.layer+1, strings.TrimPrefix(redirect, "/"))
				if err != nil {
					return r, err
				}
				if !d.found || d.isDir {
					return r, fmt.Errorf("data of metacopy file %s (redirect %q): %w", e.full(r.meta), redirect, errNoData)
				}
				r.data = d.data
				return r, nil
			}
			if ok {
				look = redirect
			}
			continue
		case !r.found && isDir:
			r.found, r.isDir, r.st = true, true, st
		case !r.isDir || !isDir:
			// A non-directory below a directory (or the reverse) is hidden.
			k = len(parent)
			continue
		}
		r.dirs = append(r.dirs, s)
		op, err := e.format.DirOpacity(e.full(s))
		if err != nil {
			return r, err
		}
		if op == overlay.Opaque {
			break
		}
		redirect, ok, err := e.format.Redirect(e.full(s))
		if err != nil {
			return r, err
		}
		if ok && strings.HasPrefix(redirect, "/") {
			d, err := e.lookupPath(s.layer+1, strings.TrimPrefix(redirect, "/"))
			if err != nil {
				return r, err
			}
			if d.found && d.isDir {
				r.dirs = append(r.dirs, d.dirs...)
			}
			break
		}
		if ok {
			look = redirect
		}
	}
	if needData {
		return r, fmt.Errorf("data of metacopy file %s: %w", e.full(r.meta), errNoData)
	}
	return r, nil
}

var errNoData = fmt.Errorf("no lower layer has the data: %w", ErrInvalidArchive)

// lookupPath looks p (relative, "" for the root) up in the union of
// layers[from:].
func (e *exporter) lookupPath(from int, p string) (lookupResult, error) {
	var r lookupResult
	if from >= len(e.layers) {
		return r, nil
	}
	parent := make([]src, 0, len(e.layers)-from)
	for i := from; i < len(e.layers); i++ {
		parent = append(parent, src{i, ""})
	}
	if p == "" || p == "." {
		r.found, r.isDir, r.dirs = true, true, parent
		return r, nil
	}
	comps := strings.Split(p, "/")
	for i, c := range comps {
		var err error
		if r, err = e.lookupChild(parent, c); err != nil {
			return r, err
		}
		if !r.found || i == len(comps)-1 {
			return r, nil
		}
		if !r.isDir {
			return lookupResult{}, nil
		}
		parent = r.dirs
	}
	return r, nil
}

// dataOf returns the data source of the regular file s of the layer: s
// itself, or for a metacopy file the lower file it stands for.
func (e *exporter) dataOf(s src) (src, error) {
	meta, err := e.format.IsMetacopy(e.full(s))
	if err != nil || !meta {
		return s, err
	}
	e.sum.MetacopyFiles++
	target := s.path
	if redirect, ok, err := e.format.Redirect(e.full(s)); err != nil {
		return s, err
	} else if ok && strings.HasPrefix(redirect, "/") {
		target = strings.TrimPrefix(redirect, "/")
	} else if ok {
		target = join(strings.TrimSuffix(path.Dir(s.path), "."), redirect)
	}
	r, err := e.lookupPath(1, target)
	if err != nil {
		return s, err
	}
	if !r.found || r.isDir {
		return s, fmt.Errorf("data of metacopy file %s: %w", e.full(s), errNoData)
	}
	return r.data, nil
}

func (e *exporter) whiteout(dir, name string, st *unix.Stat_t) error {
	p := join(dir, name)
	e.change(p, Deleted)
	e.sum.Whiteouts++
	if e.tw == nil {
		return nil
	}
	return e.write(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     join(dir, overlay.OCIWhiteoutName(name)),
		Mode:     0o644,
		ModTime:  time.Unix(st.Mtim.Unix()),
		Format:   tar.FormatPAX,
	}, nil)
}

func (e *exporter) opaqueMarker(dir string, mtime time.Time) error {
	e.sum.OpaqueDirs++
	if e.tw == nil {
		return nil
	}
	if mtime.IsZero() {
		st, _, err := lstat(e.layers[0])
		if err != nil {
			return err
		}
		mtime = time.Unix(st.Mtim.Unix())
	}
	return e.write(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     join(dir, overlay.OCIOpaqueMarker),
		Mode:     0o644,
		ModTime:  mtime,
		Format:   tar.FormatPAX,
	}, nil)
}

func (e *exporter) write(hdr *tar.Header, content io.Reader) error {
	if err := e.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write header %q: %w", hdr.Name, err)
	}
	e.sum.Entries++
	if content == nil {
		return nil
	}
	if e.buf == nil {
		e.buf = make([]byte, copyBufSize)
	}
	// Hide os.File's WriterTo: its generic path copies through a fresh
	// 32 KiB buffer per file.
	n, err := io.CopyBuffer(e.tw, struct{ io.Reader }{content}, e.buf)
	if err != nil {
		return fmt.Errorf("write content of %q: %w", hdr.Name, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("write content of %q: %d bytes, header says %d (file changed while exporting)", hdr.Name, n, hdr.Size)
	}
	return nil
}

// node writes one entry: metadata from meta (whose lstat is st), content
// (for regular files) from data.
func (e *exporter) node(p string, meta src, st *unix.Stat_t, data src) error {
	if e.tw == nil {
		return nil
	}
	full := e.full(meta)
	hdr := &tar.Header{
		Name:    p,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()),
		Format:  tar.FormatPAX,
	}
	var content io.Reader
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, p+"/"
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		t, err := os.Readlink(full)
		if err != nil {
			return err
		}
		hdr.Linkname = t
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFSOCK:
		return nil // sockets are not carried in layers
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
	default:
		return fmt.Errorf("%s: unknown file type %o", full, st.Mode&unix.S_IFMT)
	}
	if hdr.Typeflag != tar.TypeDir && st.Nlink > 1 {
		k := devIno{uint64(st.Dev), st.Ino}
		if first, ok := e.links[k]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			hdr.Mode, hdr.Uid, hdr.Gid = 0, 0, 0
			return e.write(hdr, nil)
		}
		e.links[k] = p
	}
	if err := e.addXattrs(hdr, full); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeReg {
		f, err := os.Open(e.full(data))
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }() // read-only
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		hdr.Size = fi.Size()
		content = f
	}
	return e.write(hdr, content)
}

func (e *exporter) addXattrs(hdr *tar.Header, p string) error {
	var buf [1024]byte
	b := buf[:]
	n, err := unix.Llistxattr(p, b)
	if errors.Is(err, unix.ERANGE) {
		sz, err2 := unix.Llistxattr(p, nil)
		if err2 != nil {
			return &os.PathError{Op: "llistxattr", Path: p, Err: err2}
		}
		b = make([]byte, sz)
		n, err = unix.Llistxattr(p, b)
	}
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	for _, name := range strings.Split(string(b[:n]), "\x00") {
		if name == "" || overlay.IsOverlayXattr(name) {
			continue
		}
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return &os.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		v := make([]byte, sz)
		sz, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return &os.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxXattr+name] = string(v[:sz])
	}
	return nil
}

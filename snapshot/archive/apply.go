package archive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// DevicePolicy says what Apply does with device node entries.
type DevicePolicy int

const (
	// DevicesCreate creates device nodes (needs CAP_MKNOD).
	DevicesCreate DevicePolicy = iota
	// DevicesSkip leaves device nodes out and counts them in
	// Summary.SkippedDevices.
	DevicesSkip
	// DevicesRefuse fails the import on the first device node (ErrRefused).
	DevicesRefuse
)

// SetIDPolicy says what Apply does with set-user-ID and set-group-ID
// regular files: keep them (as root, the default), or, for imports that
// must not create privileged programs (an unprivileged store, a policy),
// strip the bits or refuse the layer. Directories keep set-group-ID (it
// only makes new entries inherit the group).
type SetIDPolicy int

const (
	// SetIDKeep keeps the bits as the stream has them.
	SetIDKeep SetIDPolicy = iota
	// SetIDStrip clears them and counts the files in Summary.StrippedSetID.
	SetIDStrip
	// SetIDRefuse fails the import on the first such file (ErrRefused).
	SetIDRefuse
)

// ApplyOption configures Apply.
type ApplyOption func(*applyConfig)

type applyConfig struct {
	digest  digest.Digest
	diffID  digest.Digest
	format  overlay.Format
	devices DevicePolicy
	setID   SetIDPolicy
	noChown bool
}

// WithExpectedDigest makes Apply fail with ErrDigestMismatch unless the
// stream as read (compressed, i.e. the OCI descriptor digest) has digest d.
func WithExpectedDigest(d digest.Digest) ApplyOption {
	return func(c *applyConfig) { c.digest = d }
}

// WithExpectedDiffID makes Apply fail with ErrDigestMismatch unless the
// uncompressed tar has digest d.
func WithExpectedDiffID(d digest.Digest) ApplyOption {
	return func(c *applyConfig) { c.diffID = d }
}

// WithFormat selects the overlay xattr namespace the layer is written in
// (default trusted.overlay.*).
func WithFormat(f overlay.Format) ApplyOption { return func(c *applyConfig) { c.format = f } }

// WithDevices sets the device node policy (default DevicesCreate).
func WithDevices(p DevicePolicy) ApplyOption { return func(c *applyConfig) { c.devices = p } }

// WithSetID sets the set-user-ID/set-group-ID policy (default SetIDKeep).
func WithSetID(p SetIDPolicy) ApplyOption { return func(c *applyConfig) { c.setID = p } }

// WithoutChown keeps the extracting user as owner of every entry (for
// unprivileged imports). By default entries get the owners of the stream.
func WithoutChown() ApplyOption { return func(c *applyConfig) { c.noChown = true } }

// Summary describes an applied layer.
type Summary struct {
	Compression      Compression
	Digest           digest.Digest // of the stream as read (compressed)
	DiffID           digest.Digest // of the uncompressed tar
	Size             int64         // bytes read from the stream
	UncompressedSize int64         // bytes of the uncompressed tar
	Entries          int           // tar entries processed
	ContentBytes     int64         // regular file data written
	Whiteouts        int           // whiteouts in the layer
	OpaqueDirs       int           // dirs marked opaque
	StrippedXattrs   int           // overlay xattrs dropped from entries
	SkippedDevices   int           // device nodes left out (DevicesSkip)
	StrippedSetID    int           // files whose set-ID bits were cleared (SetIDStrip)
}

const copyBufSize = 1 << 20

// Apply extracts the OCI layer tar stream r into dir, which must be an
// existing, empty directory, converting OCI whiteouts into the overlay
// layer format. See the package documentation for the exact semantics.
//
// On error the layer may be partly written: the caller removes dir.
// Nothing is ever written outside dir. Apply does not sync; see SyncDir.
func Apply(ctx context.Context, dir string, r io.Reader, opts ...ApplyOption) (Summary, error) {
	var cfg applyConfig
	for _, o := range opts {
		o(&cfg)
	}
	s, err := apply(ctx, dir, r, &cfg)
	if err != nil {
		return s, fmt.Errorf("apply layer to %s: %w", dir, err)
	}
	return s, nil
}

func apply(ctx context.Context, dir string, r io.Reader, cfg *applyConfig) (Summary, error) {
	var sum Summary
	alg := digest.Canonical
	for _, d := range []digest.Digest{cfg.digest, cfg.diffID} {
		if d == "" {
			continue
		}
		if err := d.Validate(); err != nil {
			return sum, fmt.Errorf("expected digest %q: %w", d, err)
		}
	}
	if cfg.digest != "" {
		alg = cfg.digest.Algorithm()
	}
	diffAlg := digest.Canonical
	if cfg.diffID != "" {
		diffAlg = cfg.diffID.Algorithm()
	}

	compressed := &countingDigester{d: alg.Digester()}
	br := bufio.NewReaderSize(io.TeeReader(r, compressed), 256<<10)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return sum, fmt.Errorf("read stream: %w", err)
	}
	sum.Compression = Detect(head)
	dec, err := decompressor(sum.Compression, br)
	if err != nil {
		return sum, err
	}
	defer func() { _ = dec.Close() }() // checked below on success
	uncompressed := &countingDigester{d: diffAlg.Digester()}
	src := io.TeeReader(dec, uncompressed)
	sameStream := sum.Compression == Uncompressed && alg == diffAlg
	if sameStream {
		src = dec // the diff ID is the digest: hash once
	}
	// Decompression and both digests run in the readahead goroutine.
	ra := newReadahead(src, 4, copyBufSize)
	defer func() { _ = ra.Close() }() // never fails: it stops the goroutine
	tr := tar.NewReader(ra)

	a, err := newApplier(dir, cfg, &sum)
	if err != nil {
		return sum, err
	}
	defer a.close()
	for {
		if sum.Entries&255 == 0 {
			if err := ctx.Err(); err != nil {
				return sum, err
			}
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sum, fmt.Errorf("read tar after %d entries: %w", sum.Entries, malformed(eofIsUnexpected(err)))
		}
		sum.Entries++
		if err := a.entry(hdr, tr); err != nil {
			return sum, err
		}
	}
	if err := a.finish(); err != nil {
		return sum, err
	}
	// Drain: the diff ID covers the whole tar (end blocks, padding), the
	// digest the whole stream.
	if _, err := io.CopyBuffer(io.Discard, ra, a.buf); err != nil {
		return sum, fmt.Errorf("drain %s stream: %w", sum.Compression, malformed(eofIsUnexpected(err)))
	}
	_ = ra.Close() // never fails: it stops the goroutine
	if err := dec.Close(); err != nil {
		return sum, fmt.Errorf("close %s stream: %w", sum.Compression, err)
	}
	if _, err := io.CopyBuffer(io.Discard, br, a.buf); err != nil {
		return sum, fmt.Errorf("drain stream: %w", err)
	}
	sum.Digest, sum.Size = compressed.d.Digest(), compressed.n
	sum.DiffID, sum.UncompressedSize = uncompressed.d.Digest(), uncompressed.n
	if sameStream {
		sum.DiffID, sum.UncompressedSize = sum.Digest, sum.Size
	}
	if cfg.digest != "" && cfg.digest != sum.Digest {
		return sum, fmt.Errorf("stream digest %s, expected %s: %w", sum.Digest, cfg.digest, ErrDigestMismatch)
	}
	if cfg.diffID != "" && cfg.diffID != sum.DiffID {
		return sum, fmt.Errorf("diff ID %s, expected %s: %w", sum.DiffID, cfg.diffID, ErrDigestMismatch)
	}
	return sum, nil
}

// malformed adds ErrInvalidArchive to the decoder errors that blame the
// stream (a bad tar header, a bad gzip header or checksum), so that callers
// classify them like other malformed entries.
func malformed(err error) error {
	for _, e := range []error{tar.ErrHeader, gzip.ErrHeader, gzip.ErrChecksum} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", ErrInvalidArchive, err)
		}
	}
	return err
}

type countingDigester struct {
	d digest.Digester
	n int64
}

func (c *countingDigester) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.d.Hash().Write(p)
}

// SyncDir flushes the filesystem holding dir (syncfs), once for a whole
// layer instead of an fsync per file.
func SyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer closeFD(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}

// applier holds the state of one Apply.
type applier struct {
	cfg  *applyConfig
	sum  *Summary
	dir  string
	root int // O_RDONLY|O_DIRECTORY fd of dir
	buf  []byte

	// One-entry cache of the last resolved parent dir (O_PATH fd).
	cacheName string
	cacheFD   int

	dirTimes  []dirTime           // dirs whose times are set at the end
	opaque    map[string]struct{} // dirs with an opaque marker
	whiteouts map[string]struct{} // names with a whiteout entry
	rootMeta  *tar.Header
}

type dirTime struct {
	name         string
	atime, mtime unix.Timespec
}

func newApplier(dir string, cfg *applyConfig, sum *Summary) (*applier, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open layer dir", Path: dir, Err: err}
	}
	return &applier{
		cfg: cfg, sum: sum, dir: dir, root: fd, cacheFD: -1,
		buf:       make([]byte, copyBufSize),
		opaque:    map[string]struct{}{},
		whiteouts: map[string]struct{}{},
	}, nil
}

func (a *applier) close() {
	a.dropCache()
	if a.root >= 0 {
		closeFD(a.root)
		a.root = -1
	}
}

func (a *applier) dropCache() {
	if a.cacheFD >= 0 {
		closeFD(a.cacheFD)
	}
	a.cacheFD, a.cacheName = -1, ""
}

// cleanName turns a tar name into a clean path relative to the layer root
// ("." for the root). Leading slashes are dropped; ".." escaping the root
// is an error.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%q: NUL in name: %w", name, ErrUnsafePath)
	}
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%q escapes the layer root: %w", name, ErrUnsafePath)
	}
	if p == "" {
		p = "."
	}
	return p, nil
}

func isWhiteout(st *unix.Stat_t) bool { return overlay.IsWhiteoutStat(st) }

// openDir resolves the directory name (clean, relative) inside the layer
// root and returns an O_PATH fd for it, creating missing directories when
// create is set. The fd belongs to the cache unless it is a.root: callers
// never close it.
func (a *applier) openDir(name string, create bool) (int, error) {
	if name == "." {
		return a.root, nil
	}
	if name == a.cacheName && a.cacheFD >= 0 {
		return a.cacheFD, nil
	}
	fd, err := openInRoot(a.root, name)
	if err != nil && create && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)) {
		fd, err = a.mkdirAll(name)
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return -1, fmt.Errorf("parent dir: %w: %w", ErrInvalidArchive, err)
		}
		return -1, err
	}
	a.dropCache()
	a.cacheName, a.cacheFD = name, fd
	return fd, nil
}

func openInRoot(root int, name string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for {
		fd, err := unix.Openat2(root, name, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue
		case errors.Is(err, unix.ENOSYS):
			return -1, fmt.Errorf("openat2: %w", ErrNotSupported)
		}
		return -1, &os.PathError{Op: "openat2", Path: name, Err: err}
	}
}

// mkdirAll creates the missing directories of name, one component at a
// time, each resolved inside the root. A whiteout in the way is replaced
// (the directory is this layer's own, see the package doc); any other
// non-directory is an error.
func (a *applier) mkdirAll(name string) (int, error) {
	parent := a.root
	closeParent := func() {
		if parent != a.root {
			closeFD(parent)
		}
	}
	defer func() { closeParent() }()
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			continue
		}
		prefix := name[:i]
		fd, err := openInRoot(a.root, prefix)
		if err != nil {
			if errors.Is(err, ErrNotSupported) {
				return -1, err
			}
			comp := path.Base(prefix)
			var st unix.Stat_t
			serr := unix.Fstatat(parent, comp, &st, unix.AT_SYMLINK_NOFOLLOW)
			switch {
			case serr == nil && isWhiteout(&st):
				if err := unix.Unlinkat(parent, comp, 0); err != nil {
					return -1, &os.PathError{Op: "unlink whiteout", Path: prefix, Err: err}
				}
				a.sum.Whiteouts--
			case serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
				return -1, fmt.Errorf("parent %q is a symlink whose target is missing in the layer: %w", prefix, ErrInvalidArchive)
			case serr == nil:
				return -1, fmt.Errorf("parent %q is not a directory: %w", prefix, ErrInvalidArchive)
			}
			if err := unix.Mkdirat(parent, comp, 0o755); err != nil {
				return -1, &os.PathError{Op: "mkdir", Path: prefix, Err: err}
			}
			if fd, err = openInRoot(a.root, prefix); err != nil {
				return -1, err
			}
		}
		closeParent()
		parent = fd
	}
	fd := parent
	parent = a.root // keep it open for the caller
	return fd, nil
}

// entry applies one tar entry.
func (a *applier) entry(hdr *tar.Header, tr io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return fmt.Errorf("entry %w", err)
	}
	if err := a.entryAt(name, hdr, tr); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	return nil
}

func (a *applier) entryAt(name string, hdr *tar.Header, tr io.Reader) error {
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("root entry is not a directory: %w", ErrInvalidArchive)
		}
		a.rootMeta = hdr
		return a.setMeta(a.root, "", hdr, true)
	}
	dir, base := path.Split(name)
	dir = path.Clean(dir) // "" -> "."
	kind, target, err := overlay.ParseOCIName(base)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArchive, err)
	}
	switch kind {
	case overlay.OCIOpaque:
		if _, err := a.openDir(dir, true); err != nil {
			return err
		}
		a.opaque[dir] = struct{}{}
		return nil
	case overlay.OCIWhiteout:
		return a.whiteout(dir, target, hdr)
	}

	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeReg, tar.TypeCont, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	case tar.TypeChar, tar.TypeBlock:
		if hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0 {
			return a.whiteout(dir, base, hdr) // the same thing in this format
		}
		switch a.cfg.devices {
		case DevicesSkip:
			a.sum.SkippedDevices++
			return nil
		case DevicesRefuse:
			return fmt.Errorf("device node: %w", ErrRefused)
		}
	default:
		return fmt.Errorf("unsupported entry type %q: %w", hdr.Typeflag, ErrInvalidArchive)
	}

	pfd, err := a.openDir(dir, true)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return a.mkdir(pfd, name, base, hdr)
	case tar.TypeLink:
		return a.link(pfd, name, base, hdr)
	}
	return a.create(pfd, name, base, hdr, tr)
}

// whiteout records a whiteout of dir/target and creates it unless the
// layer has its own entry there.
func (a *applier) whiteout(dir, target string, hdr *tar.Header) error {
	pfd, err := a.openDir(dir, true)
	if err != nil {
		return err
	}
	a.whiteouts[path.Join(dir, target)] = struct{}{}
	var st unix.Stat_t
	err = unix.Fstatat(pfd, target, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		return nil // a whiteout already, or this layer's own entry: it stays
	}
	if !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "lstat", Path: path.Join(dir, target), Err: err}
	}
	if err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0); err != nil {
		return &os.PathError{Op: "mknod whiteout", Path: path.Join(dir, target), Err: err}
	}
	a.sum.Whiteouts++
	// Keep the entry's times, so that an exported and re-imported layer
	// is identical.
	ts := []unix.Timespec{atimeOf(hdr), timespec(hdr.ModTime)}
	if err := unix.UtimesNanoAt(pfd, target, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: path.Join(dir, target), Err: err}
	}
	return nil
}

// clear removes whatever is at pfd/base so that an entry can take its
// place. A directory is kept (merge) when keepDir is set; clear reports
// whether it was.
func (a *applier) clear(pfd int, name, base string, keepDir bool) (kept bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if keepDir {
			return true, nil
		}
		// The cached parent fd may lie inside the tree being removed.
		a.dropCache()
		if err := removeAllAt(pfd, base); err != nil {
			return false, fmt.Errorf("replace dir %q: %w", name, err)
		}
		return false, nil
	}
	if isWhiteout(&st) {
		a.sum.Whiteouts--
	}
	if err := unix.Unlinkat(pfd, base, 0); err != nil {
		return false, &os.PathError{Op: "unlink", Path: name, Err: err}
	}
	return false, nil
}

// removeAllAt removes dirfd/name recursively without following symlinks.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return &os.PathError{Op: "unlink", Path: name, Err: err}
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err != nil {
		_ = f.Close()
		return err
	}
	for _, n := range names {
		if err := removeAllAt(fd, n); err != nil {
			_ = f.Close()
			return fmt.Errorf("%s/%w", name, err)
		}
	}
	_ = f.Close() // a read-only dir fd
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil {
		return &os.PathError{Op: "rmdir", Path: name, Err: err}
	}
	return nil
}

func (a *applier) mkdir(pfd int, name, base string, hdr *tar.Header) error {
	for {
		err := unix.Mkdirat(pfd, base, 0o700)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "mkdir", Path: name, Err: err}
		}
		kept, err := a.clear(pfd, name, base, true)
		if err != nil {
			return err
		}
		if kept {
			break
		}
	}
	if err := a.setMetaAt(pfd, base, name, hdr); err != nil {
		return err
	}
	a.dirTimes = append(a.dirTimes, dirTime{name: name, atime: atimeOf(hdr), mtime: unix.NsecToTimespec(hdr.ModTime.UnixNano())})
	return nil
}

func (a *applier) link(pfd int, name, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link target %w", err)
	}
	if target == "." {
		return fmt.Errorf("hard link to the layer root: %w", ErrInvalidArchive)
	}
	if target == name {
		return nil // a link to itself changes nothing
	}
	tdir, tbase := path.Split(target)
	tdir = path.Clean(tdir)
	// Resolve the target's parent without the cache: pfd stays valid.
	tfd := a.root
	if tdir != "." {
		if tfd, err = openInRoot(a.root, tdir); err != nil {
			return fmt.Errorf("hard link target %q: %w: %w", hdr.Linkname, ErrInvalidArchive, err)
		}
		defer closeFD(tfd)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || isWhiteout(&st) {
		return fmt.Errorf("hard link target %q is not in the layer: %w", hdr.Linkname, ErrInvalidArchive)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hard link target %q is a directory: %w", hdr.Linkname, ErrInvalidArchive)
	}
	for {
		err := unix.Linkat(tfd, tbase, pfd, base, 0)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "link " + hdr.Linkname, Path: name, Err: err}
		}
		if _, err := a.clear(pfd, name, base, false); err != nil {
			return err
		}
	}
}

// create makes a regular file, symlink, fifo or device node.
func (a *applier) create(pfd int, name, base string, hdr *tar.Header, tr io.Reader) error {
	var dev int
	if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
		var err error
		if dev, err = devNumber(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	for {
		var err error
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			err = unix.Symlinkat(hdr.Linkname, pfd, base)
		case tar.TypeFifo:
			err = unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0)
		case tar.TypeChar:
			err = unix.Mknodat(pfd, base, unix.S_IFCHR|0o600, dev)
		case tar.TypeBlock:
			err = unix.Mknodat(pfd, base, unix.S_IFBLK|0o600, dev)
		default:
			var fd int
			fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			if err == nil {
				return a.writeFile(fd, name, hdr, tr)
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EEXIST) {
			if errors.Is(err, unix.EPERM) && (hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock) {
				return fmt.Errorf("create device node (needs root; see WithDevices): %w", err)
			}
			return &os.PathError{Op: "create", Path: name, Err: err}
		}
		if _, err := a.clear(pfd, name, base, false); err != nil {
			return err
		}
	}
	return a.setMetaAt(pfd, base, name, hdr)
}

func (a *applier) writeFile(fd int, name string, hdr *tar.Header, tr io.Reader) (err error) {
	defer func() {
		if cerr := unix.Close(fd); cerr != nil && err == nil {
			err = &os.PathError{Op: "close", Path: name, Err: cerr}
		}
	}()
	var written int64
	for {
		n, rerr := tr.Read(a.buf)
		if n > 0 {
			if err := writeAll(fd, a.buf[:n]); err != nil {
				return &os.PathError{Op: "write", Path: name, Err: err}
			}
			written += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read content: %w", eofIsUnexpected(rerr))
		}
	}
	a.sum.ContentBytes += written
	return a.setMeta(fd, name, hdr, false)
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func atimeOf(hdr *tar.Header) unix.Timespec {
	t := hdr.AccessTime
	if t.IsZero() {
		t = hdr.ModTime
	}
	return timespec(t)
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Sec: 0, Nsec: 0}
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// setMeta sets owner, xattrs, mode and (unless isDir) times through an open
// fd of a regular file or the root dir.
func (a *applier) setMeta(fd int, name string, hdr *tar.Header, isDir bool) error {
	if !a.cfg.noChown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return &os.PathError{Op: "chown", Path: name, Err: err}
		}
	}
	if err := a.xattrs(hdr, name, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		return err
	}
	mode, err := a.mode(hdr, name, isDir)
	if err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &os.PathError{Op: "chmod", Path: name, Err: err}
	}
	if isDir {
		return nil // set at the end
	}
	ts := []unix.Timespec{atimeOf(hdr), timespec(hdr.ModTime)}
	if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "utimes", Path: name, Err: err}
	}
	return nil
}

// mode returns the permission bits to give an entry, after the set-ID
// policy (regular files only).
func (a *applier) mode(hdr *tar.Header, name string, isDir bool) (uint32, error) {
	mode := uint32(hdr.Mode & 0o7777)
	const setID = unix.S_ISUID | unix.S_ISGID
	if isDir || hdr.Typeflag != tar.TypeReg || mode&setID == 0 {
		return mode, nil
	}
	switch a.cfg.setID {
	case SetIDStrip:
		a.sum.StrippedSetID++
		return mode &^ setID, nil
	case SetIDRefuse:
		return 0, fmt.Errorf("%s: set-user-ID or set-group-ID file (mode %04o): %w", name, mode, ErrRefused)
	}
	return mode, nil
}

// setMetaAt sets the metadata of pfd/base, which is not a regular file;
// directory times are deferred to finish.
func (a *applier) setMetaAt(pfd int, base, name string, hdr *tar.Header) error {
	if !a.cfg.noChown {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "chown", Path: name, Err: err}
		}
	}
	if hasXattrs(hdr) {
		p := "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
		if err := a.xattrs(hdr, name, func(k string, v []byte) error { return unix.Lsetxattr(p, k, v, 0) }); err != nil {
			return err
		}
	}
	if hdr.Typeflag == tar.TypeSymlink {
		ts := []unix.Timespec{atimeOf(hdr), timespec(hdr.ModTime)}
		if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "utimes", Path: name, Err: err}
		}
		return nil
	}
	// base was created by this entry (not a symlink), so following is safe.
	if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
		return &os.PathError{Op: "chmod", Path: name, Err: err}
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil
	}
	ts := []unix.Timespec{atimeOf(hdr), timespec(hdr.ModTime)}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: name, Err: err}
	}
	return nil
}

const paxXattr = "SCHILY.xattr."

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattr) {
			return true
		}
	}
	return false
}

func (a *applier) xattrs(hdr *tar.Header, name string, set func(string, []byte) error) error {
	for k, v := range hdr.PAXRecords {
		if !strings.HasPrefix(k, paxXattr) {
			continue
		}
		x := k[len(paxXattr):]
		if overlay.IsOverlayXattr(x) {
			a.sum.StrippedXattrs++
			continue
		}
		if err := set(x, []byte(v)); err != nil {
			return &os.PathError{Op: "setxattr " + x, Path: name, Err: err}
		}
	}
	return nil
}

// finish applies what must follow all entries: opaque markers, including
// directories that replace a whiteout of their own name, then directory
// times, deepest last written first.
func (a *applier) finish() error {
	a.dropCache()
	for name := range a.whiteouts {
		dir, base := path.Split(name)
		pfd, err := a.openDir(path.Clean(dir), false)
		if err != nil {
			continue // a parent replaced by a non-dir: no dir here
		}
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			a.opaque[name] = struct{}{}
		}
	}
	for name := range a.opaque {
		set, err := a.setOpaque(name)
		if err != nil {
			return err
		}
		if set {
			a.sum.OpaqueDirs++
		}
	}
	for i := len(a.dirTimes) - 1; i >= 0; i-- {
		d := a.dirTimes[i]
		dir, base := path.Split(d.name)
		pfd, err := a.openDir(path.Clean(dir), false)
		if err != nil {
			return fmt.Errorf("set times of %q: %w", d.name, err)
		}
		if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{d.atime, d.mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // replaced later in the stream
			}
			return &os.PathError{Op: "utimes", Path: d.name, Err: err}
		}
	}
	if h := a.rootMeta; h != nil {
		if err := unix.UtimesNanoAt(a.root, "", []unix.Timespec{atimeOf(h), timespec(h.ModTime)}, unix.AT_EMPTY_PATH); err != nil {
			return &os.PathError{Op: "utimes", Path: ".", Err: err}
		}
	}
	a.dropCache()
	return nil
}

func (a *applier) setOpaque(name string) (bool, error) {
	if name == "." {
		return true, a.cfg.format.SetOpaque(a.dir)
	}
	dir, base := path.Split(name)
	pfd, err := a.openDir(path.Clean(dir), false)
	if err != nil {
		return false, fmt.Errorf("opaque dir %q: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		// The marker's dir was replaced by a non-directory later in the
		// stream; that entry hides the lower dir by itself.
		return false, nil
	}
	return true, a.cfg.format.SetOpaque("/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base)
}

// devNumber is the dev_t of a device entry. A major or minor number
// outside 32 bits is an error rather than silently truncated.
func devNumber(hdr *tar.Header) (int, error) {
	if hdr.Devmajor < 0 || hdr.Devmajor > math.MaxUint32 || hdr.Devminor < 0 || hdr.Devminor > math.MaxUint32 {
		return 0, fmt.Errorf("device %d:%d out of range: %w", hdr.Devmajor, hdr.Devminor, ErrInvalidArchive)
	}
	return int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))), nil //nolint:gosec // range checked above; a dev_t fits int on 64-bit Linux
}

// closeFD closes fd where a close error carries nothing to act on: a
// read-only or directory fd.
func closeFD(fd int) { _ = unix.Close(fd) }

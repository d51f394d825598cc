package snapshot

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/stratafs/strata/overlay"
)

// FormatVersion is the version of the store's on-disk format that this code
// writes. Open refuses stores with a higher version.
const FormatVersion = 1

// DefaultLockTimeout is how long Open waits for the store's file lock.
const DefaultLockTimeout = 100 * time.Millisecond

// Names inside the root.
const (
	metadataFile = "metadata.db"
	ownerFile    = "owner"
	snapshotsDir = "snapshots"
	stagingDir   = "staging"
)

// Bolt layout: one top bucket "v1" holding
//
//	meta/      format -> decimal version; overlay -> comma-separated options;
//	           features -> kernel probe at creation; created -> RFC 3339
//	snapshots/ key -> JSON record; the bucket's sequence allocates ids
//	children/  parent id ‖ child id (big-endian uint64s) -> 1
var (
	bucketRoot      = []byte("v1")
	bucketMeta      = []byte("meta")
	bucketSnapshots = []byte("snapshots")
	bucketChildren  = []byte("children")

	metaFormat   = []byte("format")
	metaOverlay  = []byte("overlay")
	metaFeatures = []byte("features")
	metaCreated  = []byte("created")
)

// Option configures Open.
type Option func(*config)

type config struct {
	backend       Backend
	serverCommand ServerCommandFunc
	lockTimeout   time.Duration
	readOnly      bool
}

// WithBackend selects how Mounts assembles snapshots (default kernel).
func WithBackend(b Backend) Option { return func(c *config) { c.backend = b } }

// WithLockTimeout sets how long Open waits for the store lock held by
// another owner before failing with ErrLocked (default 100 ms).
func WithLockTimeout(d time.Duration) Option { return func(c *config) { c.lockTimeout = d } }

// WithReadOnly opens an existing store for reading only: no dir is
// created, the metadata is opened read-only under a shared lock (readers
// share the store; a writer excludes them and is named in ErrLocked), the
// owner file and staging/ are left alone, and operations that change the
// store fail with ErrReadOnly. A missing store is ErrNotFound.
func WithReadOnly() Option { return func(c *config) { c.readOnly = true } }

// Store is a snapshot store at one root directory. It is safe for
// concurrent use; one process owns a store at a time.
type Store struct {
	root    string // absolute, immutable
	db      *bolt.DB
	backend backend    // immutable
	format  FormatInfo // as recorded in the metadata; immutable

	// dirMu orders changes of the dir tree against Cleanup: operations that
	// build or rename dirs hold it shared, Cleanup and Check exclusively, so
	// Cleanup never mistakes a dir whose transaction is in flight for an
	// orphan.
	dirMu sync.RWMutex

	readOnly bool // opened WithReadOnly; immutable

	backendKind   Backend           // immutable
	serverCommand ServerCommandFunc // FUSE backend: starts servers; immutable
	// fuseMu serializes starting and stopping FUSE servers (fuse.go).
	// Lock order: dirMu, then fuseMu.
	fuseMu sync.Mutex

	closeMu sync.Mutex // guards closed
	closed  bool
}

// Open opens (creating if needed) the store at root. It fails fast with
// ErrLocked, naming the owner, when another owner has the store open, and
// with ErrUnsupportedFormat when the store was written by a newer format.
func Open(root string, opts ...Option) (_ *Store, err error) {
	c := config{backend: BackendKernel, lockTimeout: DefaultLockTimeout, serverCommand: DefaultServerCommand}
	for _, o := range opts {
		o(&c)
	}
	be, err := newBackend(c.backend)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	if c.readOnly {
		return openReadOnly(abs, be, c)
	}
	for _, d := range []string{abs, filepath.Join(abs, snapshotsDir), filepath.Join(abs, stagingDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open store %s: %w", abs, err)
		}
	}
	db, err := bolt.Open(filepath.Join(abs, metadataFile), 0o600, &bolt.Options{Timeout: c.lockTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w: %s", abs, ErrLocked, describeOwner(abs))
		}
		return nil, fmt.Errorf("open store %s: metadata: %w", abs, err)
	}
	defer func() {
		if err != nil {
			_ = db.Close() // the error returned is err
		}
	}()
	if err := writeOwner(abs); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	s := &Store{root: abs, db: db, backend: be, backendKind: c.backend, serverCommand: c.serverCommand}
	if s.format, err = initMeta(db, abs); err != nil {
		_ = os.Remove(filepath.Join(abs, ownerFile)) // best effort: the error returned is the open's
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	// Nothing can be in flight now: we own the store. Repair what a crash
	// of the previous owner left: the temporary snapshots of unfinished
	// imports, staging/, orphan snapshot dirs (a crash
	// between the rename into snapshots/ and the commit of its transaction,
	// or between Remove's transaction and its rename; an orphan's id may be
	// handed out again) and work dirs of committed snapshots (a crash
	// between Commit's transaction and the removal of the work dir).
	if err := s.removeStaleImports(context.Background()); err != nil {
		_ = os.Remove(filepath.Join(abs, ownerFile)) // best effort: the error returned is the open's
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	// A mount left inside an orphan dir keeps that dir (Check reports the
	// leaked mount; check --repair detaches it): never delete through it,
	// and never refuse to open the store for it.
	if err := s.Cleanup(context.Background()); err != nil && !errors.Is(err, errMounted) {
		_ = os.Remove(filepath.Join(abs, ownerFile)) // best effort: the error returned is the open's
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	if c.backend == BackendFUSE {
		// Servers that fail to start now are retried by Mounts, which
		// reports the error to the caller that needs the mount.
		_ = s.recoverFUSE()
	}
	return s, nil
}

// openReadOnly is Open WithReadOnly.
func openReadOnly(abs string, be backend, c config) (*Store, error) {
	if _, err := os.Stat(filepath.Join(abs, metadataFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open store %s: no store here: %w", abs, ErrNotFound)
		}
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	db, err := bolt.Open(filepath.Join(abs, metadataFile), 0o600, &bolt.Options{Timeout: c.lockTimeout, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w: %s", abs, ErrLocked, describeOwner(abs))
		}
		return nil, fmt.Errorf("open store %s: metadata: %w", abs, err)
	}
	s := &Store{root: abs, db: db, backend: be, readOnly: true, backendKind: c.backend, serverCommand: c.serverCommand}
	if s.format, err = readMeta(db); err != nil {
		_ = db.Close() // read-only; the error returned is readMeta's
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	return s, nil
}

// readMeta reads the recorded format of an existing store.
func readMeta(db *bolt.DB) (fi FormatInfo, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		rootb := tx.Bucket(bucketRoot)
		if rootb == nil || rootb.Bucket(bucketMeta) == nil {
			return fmt.Errorf("metadata: no meta bucket: %w", ErrInconsistent)
		}
		meta := rootb.Bucket(bucketMeta)
		v, err := strconv.Atoi(string(meta.Get(metaFormat)))
		if err != nil {
			return fmt.Errorf("format version %q: %w", meta.Get(metaFormat), ErrUnsupportedFormat)
		}
		if v > FormatVersion {
			return fmt.Errorf("format version %d is newer than %d, the newest this strata knows; use a newer strata: %w",
				v, FormatVersion, ErrUnsupportedFormat)
		}
		fi.Version = v
		if o := string(meta.Get(metaOverlay)); o != "" {
			fi.OverlayOptions = strings.Split(o, ",")
		}
		fi.Features = string(meta.Get(metaFeatures))
		fi.Created, _ = time.Parse(time.RFC3339Nano, string(meta.Get(metaCreated)))
		return nil
	})
	return fi, err
}

// ReadOnly reports whether the store was opened WithReadOnly.
func (s *Store) ReadOnly() bool { return s.readOnly }

// FormatInfo is the format of a store as recorded in its metadata.
type FormatInfo struct {
	// Version is the store format version (see FormatVersion).
	Version int
	// OverlayOptions are the overlay options the layers are written and
	// mounted with: overlay.FormatOptions minus what the kernel lacked
	// when the store was created.
	OverlayOptions []string
	// Features is the kernel feature probe at creation
	// (overlay.Features.String), or why there was none.
	Features string
	// Created is when the store was created.
	Created time.Time
}

// probeFormat decides the overlay options of a new store at root: the
// format options the kernel supports on root's filesystem. Probing
// mounts, so without root the options are taken as they are.
func probeFormat(root string) (opts []string, features string) {
	opts = overlay.FormatOptions(overlay.Format{})
	if os.Geteuid() != 0 {
		return opts, "not probed: not root"
	}
	f, err := overlay.ProbeDir(filepath.Join(root, stagingDir))
	if err != nil {
		return opts, "not probed: " + err.Error()
	}
	have := map[string]bool{
		"redirect_dir=on": f.RedirectDir,
		"metacopy=on":     f.Metacopy,
		"index=off":       f.Index,
		"xino=auto":       f.Xino,
		"userxattr":       f.UserXattr,
	}
	kept := opts[:0]
	for _, o := range opts {
		if ok, known := have[o]; !known || ok {
			kept = append(kept, o)
		}
	}
	return kept, f.String()
}

// initMeta checks the format version of the store at root, recording the
// current one (and probing the kernel) for a new store, and returns the
// recorded format.
func initMeta(db *bolt.DB, root string) (fi FormatInfo, err error) {
	isNew := true
	if err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRoot); b != nil && b.Bucket(bucketMeta) != nil {
			isNew = false
		}
		return nil
	}); err != nil {
		return fi, err
	}
	var probed []string
	var features string
	if isNew {
		// Outside the transaction: probing mounts, which takes a while.
		probed, features = probeFormat(root)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		rootb, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		meta := rootb.Bucket(bucketMeta)
		if meta == nil {
			if meta, err = rootb.CreateBucket(bucketMeta); err != nil {
				return err
			}
			if !isNew {
				// The meta bucket vanished between our two transactions,
				// though we hold the lock.
				return fmt.Errorf("metadata changed while opening: %w", ErrInconsistent)
			}
			for k, v := range map[string]string{
				string(metaFormat):   strconv.Itoa(FormatVersion),
				string(metaOverlay):  strings.Join(probed, ","),
				string(metaFeatures): features,
				string(metaCreated):  time.Now().UTC().Format(time.RFC3339Nano),
			} {
				if err := meta.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		v, err := strconv.Atoi(string(meta.Get(metaFormat)))
		if err != nil {
			return fmt.Errorf("format version %q: %w", meta.Get(metaFormat), ErrUnsupportedFormat)
		}
		if v > FormatVersion {
			return fmt.Errorf("format version %d is newer than %d, the newest this strata knows; use a newer strata: %w",
				v, FormatVersion, ErrUnsupportedFormat)
		}
		fi.Version = v
		if o := string(meta.Get(metaOverlay)); o != "" {
			fi.OverlayOptions = strings.Split(o, ",")
		}
		fi.Features = string(meta.Get(metaFeatures))
		fi.Created, _ = time.Parse(time.RFC3339Nano, string(meta.Get(metaCreated)))
		for _, b := range [][]byte{bucketSnapshots, bucketChildren} {
			if _, err := rootb.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	return fi, err
}

// writeOwner records this process as the owner of the store at root.
func writeOwner(root string) error {
	exe, _ := os.Executable()
	cmd := strings.Join(os.Args, " ")
	if len(cmd) > 200 {
		cmd = cmd[:200] + "…"
	}
	if exe == "" {
		exe = "?"
	}
	b := fmt.Sprintf("pid %d\nexe %s\ncmd %s\n", os.Getpid(), exe, cmd)
	p := filepath.Join(root, ownerFile)
	if err := os.WriteFile(p+".tmp", []byte(b), 0o600); err != nil {
		return fmt.Errorf("owner file: %w", err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("owner file: %w", err)
	}
	return nil
}

// describeOwner names the owner recorded at root, for the ErrLocked message.
func describeOwner(root string) string {
	b, err := os.ReadFile(filepath.Join(root, ownerFile))
	if err != nil {
		return "owner unknown (no owner file)"
	}
	var pid, cmd string
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "pid "); ok {
			pid = v
		} else if v, ok := strings.CutPrefix(line, "cmd "); ok {
			cmd = v
		}
	}
	return fmt.Sprintf("owned by pid %s (%s)", pid, cmd)
}

// Root returns the absolute root dir of the store.
func (s *Store) Root() string { return s.root }

// OverlayOptions returns the overlay format options recorded in the store.
func (s *Store) OverlayOptions() []string { return append([]string(nil), s.format.OverlayOptions...) }

// Format returns the store's format as recorded in its metadata.
func (s *Store) Format() FormatInfo {
	fi := s.format
	fi.OverlayOptions = s.OverlayOptions()
	return fi
}

// Close releases the store. Closing twice is not an error.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.readOnly {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("close store %s: %w", s.root, err)
		}
		return nil
	}
	// Remove the owner file before the lock goes, so that it never names
	// a process that has let go.
	rmErr := os.Remove(filepath.Join(s.root, ownerFile))
	if errors.Is(rmErr, os.ErrNotExist) {
		rmErr = nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.root, err)
	}
	if rmErr != nil {
		return fmt.Errorf("close store %s: %w", s.root, rmErr)
	}
	return nil
}

// record is the stored form of a snapshot.
type record struct {
	ID     uint64            `json:"id"`
	Kind   Kind              `json:"kind"`
	Parent string            `json:"parent,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Chain holds the ids of the ancestors, parent first. Ancestors can
	// neither change nor go while a snapshot has them, so Mounts needs
	// this one record only.
	Chain   []uint64  `json:"chain,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Usage of a committed snapshot, measured at commit.
	Inodes int64 `json:"inodes,omitempty"`
	Size   int64 `json:"size,omitempty"`
}

func (r *record) info(key string) Info {
	return Info{Kind: r.Kind, Name: key, Parent: r.Parent, Labels: maps.Clone(r.Labels),
		Created: r.Created, Updated: r.Updated}
}

// buckets are the store's buckets within one transaction.
type buckets struct {
	snaps    *bolt.Bucket
	children *bolt.Bucket
}

func getBuckets(tx *bolt.Tx) (buckets, error) {
	root := tx.Bucket(bucketRoot)
	if root == nil {
		return buckets{}, fmt.Errorf("metadata: missing bucket %q: %w", bucketRoot, ErrInconsistent)
	}
	b := buckets{snaps: root.Bucket(bucketSnapshots), children: root.Bucket(bucketChildren)}
	if b.snaps == nil || b.children == nil {
		return buckets{}, fmt.Errorf("metadata: missing buckets: %w", ErrInconsistent)
	}
	return b, nil
}

func (b buckets) get(key string) (*record, error) {
	v := b.snaps.Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("metadata of %q: %w", key, err)
	}
	return &r, nil
}

func (b buckets) put(key string, r *record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.snaps.Put([]byte(key), v)
}

// childKey is the key of the children index entry that says the snapshot
// with id child has the parent with id parent: both big-endian, so that
// all children of a parent are adjacent. Ids never change, so Commit
// (which renames a key but keeps its id) leaves the index alone.
func childKey(parent, child uint64) []byte {
	var k [16]byte
	binary.BigEndian.PutUint64(k[:8], parent)
	binary.BigEndian.PutUint64(k[8:], child)
	return k[:]
}

func (b buckets) addChild(parent, child uint64) error {
	return b.children.Put(childKey(parent, child), []byte{1})
}

func (b buckets) removeChild(parent, child uint64) error {
	return b.children.Delete(childKey(parent, child))
}

func (b buckets) hasChildren(parent uint64) bool {
	var prefix [8]byte
	binary.BigEndian.PutUint64(prefix[:], parent)
	k, _ := b.children.Cursor().Seek(prefix[:])
	return len(k) == 16 && string(k[:8]) == string(prefix[:])
}

// Paths of a snapshot's dirs.
func (s *Store) snapDir(id uint64) string {
	return filepath.Join(s.root, snapshotsDir, strconv.FormatUint(id, 10))
}
func (s *Store) fsDir(id uint64) string   { return filepath.Join(s.snapDir(id), "fs") }
func (s *Store) workDir(id uint64) string { return filepath.Join(s.snapDir(id), "work") }

// emptyDir removes everything inside dir, except entries with a mount at
// or under them: those are left in place (Check reports them as leaked
// mounts; check --repair detaches them), never deleted through.
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if err := removeAll(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, errMounted) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// errMounted: a tree to be removed has a mount point in it.
var errMounted = fmt.Errorf("a mount point is inside it: %w", ErrFailedPrecondition)

// removeAll is os.RemoveAll that never crosses a mount point. A mount left
// under the store (a container's rootfs, a bind mount) would otherwise make
// RemoveAll delete through it, into the layers or host dirs behind it.
func removeAll(p string) error {
	ms, err := overlay.MountsUnder(p)
	if err != nil {
		return fmt.Errorf("remove %s: read mounts: %w", p, err)
	}
	if len(ms) > 0 {
		return fmt.Errorf("remove %s: %s is mounted: %w", p, ms[0], errMounted)
	}
	return os.RemoveAll(p)
}

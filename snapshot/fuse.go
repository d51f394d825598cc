package snapshot

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// The FUSE backend (BackendFUSE).
//
// A snapshot that needs a union (an active snapshot with parents, a view
// of two or more layers) is served by one FUSE server process, mounted at
//
//	<root>/mounts/<id>        the FUSE mount (the server's log: <id>.log)
//
// and Mounts returns a bind mount of that dir. Snapshots that need no
// union (no parent, a view of one layer, committed snapshots) get the
// kernel backend's bind (or overlay) mounts.
//
// Servers are separate processes (`strata mount --backend fuse`, which
// detaches the server and exits once the mount is live), as fuse-overlayfs
// runs, so they outlive the process that owns the store: a restart of
// `strata serve` leaves running containers' root filesystems alone. Open
// rediscovers them: it detaches dead mounts (server gone: ENOTCONN),
// remounts those of live snapshots, and removes mounts of snapshots that
// are gone. Mounts checks the mount before returning it and remounts a
// dead one, so no ENOTCONN dir is handed to a runtime. Commit and Remove
// unmount it; its server exits once the last bind mount of it is gone.

// mountsDir holds the FUSE mounts of the store.
const mountsDir = "mounts"

// ServerCommandFunc returns the command that mounts a FUSE server with
// the given strata arguments (args excludes the program name: "mount",
// "--backend", "fuse", ...). The command must exit 0 only once the mount
// is live and leave the server running detached, as `strata mount
// --backend fuse` does.
type ServerCommandFunc func(args []string) *exec.Cmd

// DefaultServerCommand runs this executable (strata) with args.
func DefaultServerCommand(args []string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = "strata"
	}
	return exec.Command(exe, args...) //nolint:gosec // this very executable
}

// WithServerCommand sets how the FUSE backend starts its servers (default
// DefaultServerCommand). Tests whose binary is not strata point it at a
// binary that is.
func WithServerCommand(f ServerCommandFunc) Option {
	return func(c *config) { c.serverCommand = f }
}

// needsServer reports whether r is assembled by a FUSE server under the
// FUSE backend.
func needsServer(r *record) bool {
	switch r.Kind {
	case KindActive:
		return len(r.Chain) > 0
	case KindView:
		return len(r.Chain) > 1
	}
	return false
}

func (s *Store) fuseMountPoint(id uint64) string {
	return filepath.Join(s.root, mountsDir, strconv.FormatUint(id, 10))
}

// fuseBackend returns a bind mount of the snapshot's FUSE mount for
// snapshots that need a union; the others as the kernel backend does.
type fuseBackend struct{}

func (fuseBackend) mounts(s *Store, r *record) ([]Mount, error) {
	if !needsServer(r) {
		return kernelBackend{}.mounts(s, r)
	}
	mode := "rw"
	if r.Kind != KindActive {
		mode = "ro"
	}
	return []Mount{{Type: "bind", Source: s.fuseMountPoint(r.ID), Options: []string{mode, "rbind"}}}, nil
}

// serverArgs are the strata arguments that mount r's stack at its mount
// point.
func (s *Store) serverArgs(r *record) []string {
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	var lowers []string
	for _, id := range r.Chain {
		lowers = append(lowers, esc.Replace(s.fsDir(id)))
	}
	opts := []string{"lowerdir=" + strings.Join(lowers, ":")}
	if r.Kind == KindActive {
		opts = append(opts, "upperdir="+s.fsDir(r.ID), "workdir="+s.workDir(r.ID))
	}
	if slices.Contains(s.format.OverlayOptions, "userxattr") {
		opts = append(opts, "userxattr")
	}
	mp := s.fuseMountPoint(r.ID)
	return []string{"mount", "--backend", "fuse", "--log", mp + ".log", "-o", strings.Join(opts, ","), "--", mp}
}

// fuseState is the state of a FUSE mount point.
type fuseState int

const (
	fuseAbsent fuseState = iota // no dir, or a dir with nothing mounted
	fuseLive                    // a FUSE mount that answers
	fuseDead                    // a FUSE mount whose server is gone
	fuseOther                   // something else is mounted there
)

// fuseStateOf inspects mp. statfs is never answered from the kernel's
// caches, so a dead server shows as ENOTCONN (or ECONNABORTED).
func fuseStateOf(mp string) (fuseState, error) {
	var st unix.Statfs_t
	err := unix.Statfs(mp, &st)
	switch {
	case errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED):
		return fuseDead, nil
	case errors.Is(err, unix.ENOENT):
		return fuseAbsent, nil
	case err != nil:
		return fuseAbsent, &os.PathError{Op: "statfs", Path: mp, Err: err}
	case st.Type == unix.FUSE_SUPER_MAGIC:
		return fuseLive, nil
	}
	ms, err := overlay.MountsUnder(mp)
	if err != nil {
		return fuseAbsent, err
	}
	if slices.Contains(ms, mp) {
		return fuseOther, nil
	}
	return fuseAbsent, nil
}

// startServer mounts r's FUSE server at its mount point, clearing a dead
// mount first; a live one is left as it is. Callers hold fuseMu.
func (s *Store) startServer(r *record) error {
	mp := s.fuseMountPoint(r.ID)
	state, err := fuseStateOf(mp)
	if err != nil {
		return err
	}
	switch state {
	case fuseLive:
		return nil
	case fuseOther:
		return fmt.Errorf("fuse mount point %s: something else is mounted there: %w", mp, ErrFailedPrecondition)
	case fuseDead:
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("clear dead fuse mount %s: %w", mp, err)
		}
	}
	if err := os.MkdirAll(mp, 0o700); err != nil {
		return err
	}
	cmd := s.serverCommand(s.serverArgs(r))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start fuse server at %s: %w: %s", mp, err, strings.TrimSpace(string(out)))
	}
	if state, err := fuseStateOf(mp); err != nil || state != fuseLive {
		return fmt.Errorf("start fuse server at %s: server reported success, but no live mount (%v): %w", mp, err, ErrInconsistent)
	}
	return nil
}

// stopServer unmounts the FUSE mount of id, if any, and removes its dir
// and log. The server exits once no bind mount of it is left. Callers
// hold fuseMu.
func (s *Store) stopServer(id uint64) error {
	mp := s.fuseMountPoint(id)
	state, err := fuseStateOf(mp)
	if err != nil {
		return err
	}
	switch state {
	case fuseLive, fuseDead:
		if err := unix.Unmount(mp, 0); err != nil {
			// busy (a process has its cwd there): detach, the kernel
			// drops it when the last user leaves
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount fuse mount %s: %w", mp, err)
			}
		}
	case fuseOther:
		return fmt.Errorf("fuse mount point %s: something else is mounted there: %w", mp, ErrFailedPrecondition)
	}
	if err := os.Remove(mp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove fuse mount point: %w", err)
	}
	if err := os.Remove(mp + ".log"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove fuse log: %w", err)
	}
	return nil
}

// ensureServed makes sure key (record r, read earlier), if it needs a
// server under this store's backend, has a live one. Under fuseMu it
// reads key again: a Remove or Commit that ran since must not be undone
// by starting a server for what is gone.
func (s *Store) ensureServed(key string, r *record) error {
	if s.backendKind != BackendFUSE || !needsServer(r) || s.readOnly {
		return nil
	}
	s.fuseMu.Lock()
	defer s.fuseMu.Unlock()
	var now *record
	if err := s.view(func(b buckets) error {
		var err error
		now, err = b.get(key)
		return err
	}); err != nil {
		return err
	}
	if now.ID != r.ID || !needsServer(now) {
		return nil
	}
	return s.startServer(now)
}

// stopServerIfAny unmounts id's FUSE mount if its dir exists (whatever
// the backend: a store may have been served with FUSE before). Lock
// order: dirMu before fuseMu.
func (s *Store) stopServerIfAny(id uint64) error {
	s.fuseMu.Lock()
	defer s.fuseMu.Unlock()
	return s.stopServerIfAnyLocked(id)
}

// stopServerIfAnyLocked is stopServerIfAny with fuseMu held.
func (s *Store) stopServerIfAnyLocked(id uint64) error {
	_, err1 := os.Lstat(s.fuseMountPoint(id))
	_, err2 := os.Lstat(s.fuseMountPoint(id) + ".log")
	if errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist) {
		return nil
	}
	return s.stopServer(id)
}

// recoverFUSE runs at Open under the FUSE backend: it detaches dead
// mounts under mounts/, stops those of snapshots that are gone, and
// (re)starts the servers of live snapshots that need one. Failures to
// start are returned joined; Mounts retries.
func (s *Store) recoverFUSE() error {
	s.fuseMu.Lock()
	defer s.fuseMu.Unlock()
	recs := map[uint64]*record{}
	if err := s.view(func(b buckets) error {
		return b.snaps.ForEach(func(k, _ []byte) error {
			r, err := b.get(string(k))
			if err != nil {
				return err
			}
			recs[r.ID] = r
			return nil
		})
	}); err != nil {
		return err
	}
	var errs []error
	ents, err := os.ReadDir(filepath.Join(s.root, mountsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".log")
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue // not ours
		}
		if r, ok := recs[id]; ok && needsServer(r) {
			continue // started below
		}
		if err := s.stopServer(id); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range recs {
		if needsServer(r) {
			if err := s.startServer(r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkFUSE lists problems with the FUSE mounts under mounts/ for Check,
// and returns the mount points that are the store's own (not leaks).
func (s *Store) checkFUSE(live map[uint64]*record, add func(string, ...any)) map[string]bool {
	own := map[string]bool{}
	ents, err := os.ReadDir(filepath.Join(s.root, mountsDir))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			add("mounts: %v", err)
		}
		return own
	}
	for _, e := range ents {
		mp := filepath.Join(s.root, mountsDir, e.Name())
		if strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		r, ok := live[id]
		state, serr := fuseStateOf(mp)
		switch {
		case serr != nil:
			add("fuse mount %s: %v", mp, serr)
		case err != nil || !ok:
			add("fuse mount point %s belongs to no snapshot", mp)
		case !needsServer(r):
			add("fuse mount point %s: snapshot (id %d, %s) needs none", mp, id, r.Kind)
		case state == fuseDead:
			add("dead fuse mount at %s (server gone: ENOTCONN); Open or Mounts remounts it", mp)
			own[mp] = true // reported here, not as a leak
		case state == fuseLive:
			own[mp] = true
		}
	}
	return own
}

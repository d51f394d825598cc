package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// diskUsage walks dir as du does: every inode once (hard links count
// once), Size in allocated bytes (st_blocks × 512). Subdirectories are
// walked in parallel.
func diskUsage(ctx context.Context, dir string) (Usage, error) {
	w := &duWalker{
		ctx:  ctx,
		seen: make(map[duKey]struct{}),
		sem:  make(chan struct{}, 4*runtime.GOMAXPROCS(0)),
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return Usage{}, &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	w.count(&st)
	w.wg.Add(1)
	w.walk(dir)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.usage, errors.Join(w.errs...)
}

type duKey struct{ dev, ino uint64 }

type duWalker struct {
	ctx context.Context
	sem chan struct{} // bounds the goroutines walking dirs
	wg  sync.WaitGroup

	mu    sync.Mutex // guards seen, usage, errs
	seen  map[duKey]struct{}
	usage Usage
	errs  []error
}

func (w *duWalker) count(st *unix.Stat_t) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.add(st)
}

// add counts st unless it is a hard link already counted.
//
// Preconditions: w.mu is held.
func (w *duWalker) add(st *unix.Stat_t) {
	if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		k := duKey{uint64(st.Dev), st.Ino}
		if _, ok := w.seen[k]; ok {
			return
		}
		w.seen[k] = struct{}{}
	}
	w.usage.Inodes++
	w.usage.Size += st.Blocks * 512
}

func (w *duWalker) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

// walk counts the entries of dir and walks its subdirs, in a new goroutine
// when one is free, else inline. The caller did w.wg.Add(1). Entries are
// stat'ed relative to the open dir (no path walk per entry) and counted
// locally; only hard-linked files and the totals take w.mu.
func (w *duWalker) walk(dir string) {
	defer w.wg.Done()
	if err := w.ctx.Err(); err != nil {
		w.fail(err)
		return
	}
	f, err := os.Open(dir)
	if err != nil {
		w.fail(err)
		return
	}
	defer func() { _ = f.Close() }() // read-only
	names, err := f.Readdirnames(-1)
	if err != nil {
		w.fail(fmt.Errorf("readdir %s: %w", dir, err))
		return
	}
	fd := int(f.Fd())
	var local Usage
	var linked []unix.Stat_t
	var subdirs []string
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed while walking an active snapshot
			}
			w.fail(&os.PathError{Op: "lstat", Path: filepath.Join(dir, n), Err: err})
			continue
		}
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			subdirs = append(subdirs, filepath.Join(dir, n))
		case st.Nlink > 1:
			linked = append(linked, st)
			continue
		}
		local.Inodes++
		local.Size += st.Blocks * 512
	}
	w.mu.Lock()
	w.usage.Add(local)
	for i := range linked {
		w.add(&linked[i])
	}
	w.mu.Unlock()
	for _, p := range subdirs {
		w.wg.Add(1)
		select {
		case w.sem <- struct{}{}:
			go func() {
				defer func() { <-w.sem }()
				w.walk(p)
			}()
		default:
			w.walk(p)
		}
	}
}

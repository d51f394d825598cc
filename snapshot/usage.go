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
// when one is free, else inline. The caller did w.wg.Add(1).
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
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		w.fail(fmt.Errorf("readdir %s: %w", dir, err))
		return
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed while walking an active snapshot
			}
			w.fail(&os.PathError{Op: "lstat", Path: p, Err: err})
			continue
		}
		w.count(&st)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
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

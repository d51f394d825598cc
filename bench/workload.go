package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CacheState is the page-cache state a workload starts in.
type CacheState string

const (
	// Cold: fresh mount, then sync and drop_caches (page cache, dentries
	// and inodes all gone).
	Cold CacheState = "cold"
	// Remount: fresh mount, with the lower files already in the page cache
	// (a previous mount touched them).
	Remount CacheState = "remount"
	// Warm: the same mount ran the workload once just before.
	Warm CacheState = "warm"
)

// AllStates lists the cache states in report order.
var AllStates = []CacheState{Cold, Remount, Warm}

// Env is what a workload may use besides the mounted union.
type Env struct {
	// FIO is the path of the fio binary, "" to use the Go pread loop.
	FIO string
	// Git is the path of the git binary ("" when not installed).
	Git string
}

// Workload is one measured operation on a mounted union. Run returns the
// time the operation itself took (mount, setup and result checks are
// excluded; with TimesMount the runner adds the mount's time) and an error
// wrapping ErrWrongResult when the result is wrong.
type Workload struct {
	Name string
	Desc string
	// Stack picks the layers (topmost first) the workload mounts.
	Stack func(ls *LayerSet) []string
	// Mutates: the workload writes, so it gets a fresh upper every round
	// and the warm state does not apply.
	Mutates bool
	// TimesMount: the mount is part of the measured operation: the
	// backend's Mount call is timed and added to Run's time (a cold run
	// drops the caches before mounting). The warm state does not apply.
	TimesMount bool
	Run        func(ls *LayerSet, root string, env Env) (time.Duration, error)
	// OwnStates, when set, are the workload's default cache states, kept
	// even when Options.ReadOnlyStates replaces the read-only workloads'
	// defaults (Options.States still overrides them).
	OwnStates []CacheState
	// Fixup, when set, is applied once to a flattened copy of Stack (the
	// native baseline's, see Preparer) so that it looks like a plain
	// checkout rather than a copy (git-status: refresh the git index).
	Fixup func(ls *LayerSet, flat string) error
}

// States returns the cache states w runs in by default: all three for a
// read-only workload; remount for a mutating one (lower files cached, so
// the copy-up itself is measured; ask for cold explicitly); cold and
// remount for one that times its mount.
func (w Workload) States() []CacheState {
	switch {
	case len(w.OwnStates) > 0:
		return w.OwnStates
	case w.Mutates:
		return []CacheState{Remount}
	case w.TimesMount:
		return []CacheState{Cold, Remount}
	}
	return AllStates
}

// warmable reports whether the warm state (the same mount ran the
// workload just before) applies to w.
func (w Workload) warmable() bool { return !w.Mutates && !w.TimesMount }

func wrong(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrWrongResult)
}

func mainStack(ls *LayerSet) []string { return ls.Main }

// Workloads returns every workload for ls, in report order.
func Workloads(ls *LayerSet) []Workload {
	var ws []Workload
	maxDepth := 0
	if len(ls.Spec.StatDepths) > 0 {
		maxDepth = slices.Max(ls.Spec.StatDepths)
	}
	for _, d := range ls.Spec.StatDepths {
		stack := func(ls *LayerSet) []string { return ls.Deep[d] }
		// Every depth runs cold and warm (the default read-only states);
		// the deepest also in remount, where a backend's own first-lookup
		// cost shows without disk reads (the FUSE issue's stat goal).
		var own []CacheState
		if d == maxDepth {
			own = AllStates
		}
		ws = append(ws,
			Workload{Name: fmt.Sprintf("stat-hit-d%d", d), Stack: stack, Run: statHit, OwnStates: own,
				Desc: fmt.Sprintf("lstat %d existing names of the bottom layer through %d layers", len(ls.StatHit), d)},
			Workload{Name: fmt.Sprintf("stat-miss-d%d", d), Stack: stack, Run: statMiss, OwnStates: own,
				Desc: fmt.Sprintf("lstat %d missing names through %d layers (ENOENT expected)", len(ls.StatMiss), d)},
		)
	}
	if maxDepth > 0 {
		d := maxDepth
		ws = append(ws, Workload{Name: fmt.Sprintf("mount-d%d", d), TimesMount: true, Run: mountRoot,
			Stack: func(ls *LayerSet) []string { return ls.Deep[d] },
			Desc:  fmt.Sprintf("mount the depth-%d stat stack read-only and lstat its root (the mount is timed); root lists the %d stat dirs", d, statDirs)})
	}
	ws = append(ws,
		Workload{Name: "readdir-wide", Stack: mainStack, Run: readdirWide, OwnStates: AllStates,
			Desc: fmt.Sprintf("list wide/ (%d names merged from %d layers, with whiteouts); exact name set checked", ls.Spec.WideEntries, ls.Spec.WideLayers)},
		Workload{Name: "find-walk", Stack: mainStack, Run: findWalk,
			Desc: "find over the whole union; entry count checked"},
		Workload{Name: "read-all", Stack: mainStack, Run: readAll,
			Desc: "walk and read every small file (find | xargs cat); every CRC checked"},
		Workload{Name: "seqread-large", Stack: mainStack, Run: seqReadLarge,
			Desc: fmt.Sprintf("read the %d MiB bottom-layer file sequentially (1 MiB reads); CRC checked", ls.Spec.LargeSize>>20)},
		// Warm random reads are page-cache hits on every backend (equal
		// within a few % in every run so far): cold only by default.
		Workload{Name: "randread-large", Stack: mainStack, Run: randReadLarge, OwnStates: []CacheState{Cold},
			Desc: fmt.Sprintf("%d random 4 KiB reads of the large file (fio psync, or a Go pread loop that checks every block)", ls.Spec.RandReads)},
	)
	if ls.Spec.GitFiles > 0 {
		ws = append(ws, Workload{Name: "git-status", Stack: func(ls *LayerSet) []string { return ls.Git }, Run: gitStatus, Fixup: gitRefresh,
			Desc: fmt.Sprintf("git status --porcelain (no optional locks) in a %d-file repository committed in the lower layer, with files modified, deleted and added above; exact output checked", ls.Spec.GitFiles)})
	}
	ws = append(ws,
		Workload{Name: "append-large", Stack: mainStack, Mutates: true, Run: appendLarge,
			Desc: "append 1 byte to the large lower file (full copy-up); size and content checked"},
		Workload{Name: "chmod-large", Stack: mainStack, Mutates: true, Run: chmodLarge,
			Desc: "chmod the large lower file (copy-up; metadata-only with metacopy=on)"},
		Workload{Name: "touch-wide", Stack: mainStack, Mutates: true, Run: touchWide,
			Desc: fmt.Sprintf("utimes %d lower files of wide/ (one copy-up each); mtimes checked", ls.Spec.WideEntries)},
		Workload{Name: "create-files", Stack: mainStack, Mutates: true, Run: createFiles,
			Desc: fmt.Sprintf("create %d new 64-byte files in a new dir; count checked", ls.Spec.CreateFiles)},
		Workload{Name: "untar", Stack: mainStack, Mutates: true, Run: untar,
			Desc: fmt.Sprintf("GNU tar -x of %d small files; counts and bytes checked", ls.TarFiles)},
		Workload{Name: "rm-tree", Stack: mainStack, Mutates: true, Run: rmTree,
			Desc: "rm -rf tree/ (files of every layer; whiteouts in upper); absence checked"},
	)
	return ws
}

// SelectWorkloads picks workloads by name or path.Match pattern
// ("stat-*"); with no patterns it returns all of ws.
func SelectWorkloads(ws []Workload, patterns []string) ([]Workload, error) {
	if len(patterns) == 0 {
		return ws, nil
	}
	var out []Workload
	for _, w := range ws {
		for _, p := range patterns {
			if ok, _ := path.Match(p, w.Name); ok {
				out = append(out, w)
				break
			}
		}
	}
	for _, p := range patterns {
		matched := false
		for _, w := range ws {
			if ok, _ := path.Match(p, w.Name); ok {
				matched = true
			}
		}
		if !matched {
			var names []string
			for _, w := range ws {
				names = append(names, w.Name)
			}
			return nil, fmt.Errorf("workload %q: %w (known: %s)", p, ErrUnknownWorkload, strings.Join(names, ", "))
		}
	}
	return out, nil
}

func joinAll(root string, rels []string) []string {
	out := make([]string, len(rels))
	for i, r := range rels {
		out[i] = root + "/" + r
	}
	return out
}

func statHit(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	ps := joinAll(root, ls.StatHit)
	var st unix.Stat_t
	start := time.Now()
	for i, p := range ps {
		if err := unix.Lstat(p, &st); err != nil {
			return 0, wrong("lstat %s: %v", p, err)
		}
		if st.Size != ls.StatHitSize[i] {
			return 0, wrong("lstat %s: size %d, want %d", p, st.Size, ls.StatHitSize[i])
		}
	}
	return time.Since(start), nil
}

func statMiss(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	ps := joinAll(root, ls.StatMiss)
	var st unix.Stat_t
	start := time.Now()
	for _, p := range ps {
		if err := unix.Lstat(p, &st); !errors.Is(err, unix.ENOENT) {
			return 0, wrong("lstat %s: got %v, want ENOENT", p, err)
		}
	}
	return time.Since(start), nil
}

// mountRoot is the timed part of mount-dN after the mount: lstat the
// root. The check lists it: exactly the stat dirs p00..p15.
func mountRoot(_ *LayerSet, root string, _ Env) (time.Duration, error) {
	var st unix.Stat_t
	start := time.Now()
	err := unix.Lstat(root, &st)
	d := time.Since(start)
	if err != nil {
		return 0, wrong("lstat %s: %v", root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, wrong("%s: mode %o, want a dir", root, st.Mode)
	}
	f, err := os.Open(root)
	if err != nil {
		return 0, wrong("open %s: %v", root, err)
	}
	names, err := f.Readdirnames(-1)
	_ = f.Close() // read-only
	if err != nil {
		return 0, wrong("readdir %s: %v", root, err)
	}
	var want []string
	for i := 0; i < statDirs; i++ {
		want = append(want, fmt.Sprintf("p%02d", i))
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		return 0, wrong("readdir %s: %q, want %q", root, names, want)
	}
	return d, nil
}

func readdirWide(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	start := time.Now()
	f, err := os.Open(filepath.Join(root, "wide"))
	if err != nil {
		return 0, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	slices.Sort(names)
	if !slices.Equal(names, ls.WideNames) {
		return 0, wrong("readdir wide/: %d names, want %d (%s)", len(names), len(ls.WideNames), firstDiff(names, ls.WideNames))
	}
	return d, nil
}

// firstDiff describes the first difference of two sorted name lists.
func firstDiff(got, want []string) string {
	g, w := map[string]bool{}, map[string]bool{}
	for _, n := range got {
		g[n] = true
	}
	for _, n := range want {
		w[n] = true
	}
	for _, n := range got {
		if !w[n] {
			return fmt.Sprintf("unexpected %q", n)
		}
	}
	for _, n := range want {
		if !g[n] {
			return fmt.Sprintf("missing %q", n)
		}
	}
	return "duplicates"
}

type lineCounter struct{ n int }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += bytes.Count(p, []byte{'\n'})
	return len(p), nil
}

func findWalk(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	var lc lineCounter
	var stderr bytes.Buffer
	cmd := exec.Command("find", root)
	cmd.Stdout, cmd.Stderr = &lc, &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, wrong("find %s: %v: %s", root, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if want := len(ls.Manifest) + 1; lc.n != want {
		return 0, wrong("find %s: %d entries, want %d", root, lc.n, want)
	}
	return d, nil
}

func readAll(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	buf := make([]byte, 256<<10)
	skip := filepath.Join(root, path.Dir(ls.Large))
	files := 0
	start := time.Now()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p == skip {
				return filepath.SkipDir
			}
			return nil
		}
		rel := strings.TrimPrefix(p, root+"/")
		want, ok := ls.Manifest[rel]
		if !ok || want.Dir {
			return wrong("read-all: unexpected file %s", rel)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		h := crc32.New(castagnoli)
		n, err := io.CopyBuffer(h, f, buf)
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if n != want.Size || h.Sum32() != want.CRC {
			return wrong("read-all: %s: %d bytes crc %08x, want %d bytes crc %08x", rel, n, h.Sum32(), want.Size, want.CRC)
		}
		files++
		return nil
	})
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	want := 0
	for k, e := range ls.Manifest {
		if !e.Dir && !strings.HasPrefix(k, path.Dir(ls.Large)+"/") {
			want++
		}
	}
	if files != want {
		return 0, wrong("read-all: read %d files, want %d", files, want)
	}
	return d, nil
}

func seqReadLarge(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	p := filepath.Join(root, ls.Large)
	buf := make([]byte, 1<<20)
	start := time.Now()
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	h := crc32.New(castagnoli)
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf)
	f.Close()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p, err)
	}
	if n != ls.Spec.LargeSize || h.Sum32() != ls.LargeCRC {
		return 0, wrong("%s: %d bytes crc %08x, want %d bytes crc %08x", p, n, h.Sum32(), ls.Spec.LargeSize, ls.LargeCRC)
	}
	return d, nil
}

func randReadLarge(ls *LayerSet, root string, env Env) (time.Duration, error) {
	p := filepath.Join(root, ls.Large)
	if env.FIO != "" {
		return fioRandRead(ls, p, env.FIO)
	}
	rng := rand.New(rand.NewPCG(ls.Spec.Seed, 0x52414e44))
	blocks := ls.Spec.LargeSize / BlockSize
	offs := make([]int64, ls.Spec.RandReads)
	for i := range offs {
		offs[i] = rng.Int64N(blocks)
	}
	buf := make([]byte, BlockSize)
	start := time.Now()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	for _, b := range offs {
		n, err := unix.Pread(fd, buf, b*BlockSize)
		if err != nil || n != BlockSize {
			return 0, wrong("pread %s at block %d: %d bytes, %v", p, b, n, err)
		}
		if crc32.Checksum(buf, castagnoli) != ls.LargeBlockCRC[b] {
			return 0, wrong("pread %s: block %d has wrong content", p, b)
		}
	}
	return time.Since(start), nil
}

func fioRandRead(ls *LayerSet, p, fio string) (time.Duration, error) {
	ioSize := int64(ls.Spec.RandReads) * BlockSize
	cmd := exec.Command(fio, "--name=randread", "--filename="+p, "--readonly", "--rw=randread",
		"--bs=4k", "--ioengine=psync", "--invalidate=0", "--randrepeat=1",
		fmt.Sprintf("--randseed=%d", ls.Spec.Seed), fmt.Sprintf("--size=%d", ls.Spec.LargeSize),
		fmt.Sprintf("--io_size=%d", ioSize), "--output-format=json")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, wrong("fio on %s: %v: %s", p, err, bytes.TrimSpace(stderr.Bytes()))
	}
	raw := out.Bytes()
	if i := bytes.IndexByte(raw, '{'); i > 0 {
		raw = raw[i:]
	}
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return 0, fmt.Errorf("fio on %s: parse output: %w", p, err)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 || res.Jobs[0].Read.IOBytes != ioSize {
		return 0, wrong("fio on %s: %+v, want one job reading %d bytes", p, res.Jobs, ioSize)
	}
	return d, nil
}

// checkBlocks verifies a few blocks of the large file (first, last, and
// some in between) after a copy-up.
func checkBlocks(ls *LayerSet, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n := int64(len(ls.LargeBlockCRC))
	buf := make([]byte, BlockSize)
	for _, b := range []int64{0, n / 3, n / 2, n - 1} {
		if _, err := f.ReadAt(buf, b*BlockSize); err != nil {
			return fmt.Errorf("read %s block %d: %w", p, b, err)
		}
		if crc32.Checksum(buf, castagnoli) != ls.LargeBlockCRC[b] {
			return wrong("%s: block %d changed", p, b)
		}
	}
	return nil
}

func appendLarge(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	p := filepath.Join(root, ls.Large)
	start := time.Now()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return 0, err
	}
	_, err = f.Write([]byte{0x5a})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("append to %s: %w", p, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	if fi.Size() != ls.Spec.LargeSize+1 {
		return 0, wrong("%s: size %d after append, want %d", p, fi.Size(), ls.Spec.LargeSize+1)
	}
	last := make([]byte, 1)
	g, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	if _, err := g.ReadAt(last, ls.Spec.LargeSize); err != nil || last[0] != 0x5a {
		return 0, wrong("%s: appended byte %x (%v), want 5a", p, last, err)
	}
	return d, checkBlocks(ls, p)
}

func chmodLarge(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	p := filepath.Join(root, ls.Large)
	start := time.Now()
	err := os.Chmod(p, 0o600)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != ls.Spec.LargeSize {
		return 0, wrong("%s: mode %v size %d after chmod, want 0600 and %d", p, fi.Mode().Perm(), fi.Size(), ls.Spec.LargeSize)
	}
	return d, checkBlocks(ls, p)
}

var touchTime = unix.NsecToTimespec(time.Date(2020, 2, 2, 2, 2, 2, 0, time.UTC).UnixNano())

func touchWide(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	ps := joinAll(filepath.Join(root, "wide"), ls.WideNames)
	ts := []unix.Timespec{touchTime, touchTime}
	start := time.Now()
	for _, p := range ps {
		if err := unix.UtimesNano(p, ts); err != nil {
			return 0, &os.PathError{Op: "utimes", Path: p, Err: err}
		}
	}
	d := time.Since(start)
	var st unix.Stat_t
	for _, p := range ps {
		if err := unix.Lstat(p, &st); err != nil {
			return 0, wrong("lstat %s after touch: %v", p, err)
		}
		if st.Mtim != touchTime {
			return 0, wrong("%s: mtime %v after touch, want %v", p, st.Mtim, touchTime)
		}
	}
	return d, nil
}

func createFiles(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	dir := filepath.Join(root, "new")
	data := bytes.Repeat([]byte("x"), 64)
	start := time.Now()
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	for i := 0; i < ls.Spec.CreateFiles; i++ {
		p := fmt.Sprintf("%s/c%05d", dir, i)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return 0, err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, fmt.Errorf("write %s: %w", p, err)
		}
	}
	d := time.Since(start)
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return 0, err
	}
	if len(names) != ls.Spec.CreateFiles {
		return 0, wrong("%s: %d entries after create, want %d", dir, len(names), ls.Spec.CreateFiles)
	}
	return d, nil
}

func untar(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	dst := filepath.Join(root, "untar-dst")
	if err := os.Mkdir(dst, 0o755); err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command("tar", "-x", "-f", ls.Tarball, "-C", dst)
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, wrong("tar -x into %s: %v: %s", dst, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var files, dirs int
	var total int64
	err = filepath.WalkDir(dst, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == dst {
			return err
		}
		if de.IsDir() {
			dirs++
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		files++
		total += fi.Size()
		return nil
	})
	if err != nil {
		return 0, err
	}
	if files != ls.TarFiles || dirs != ls.TarDirs || total != ls.TarBytes {
		return 0, wrong("untar: %d files %d dirs %d bytes, want %d files %d dirs %d bytes", files, dirs, total, ls.TarFiles, ls.TarDirs, ls.TarBytes)
	}
	return d, nil
}

func rmTree(ls *LayerSet, root string, _ Env) (time.Duration, error) {
	dir := filepath.Join(root, "tree")
	var stderr bytes.Buffer
	cmd := exec.Command("rm", "-rf", dir)
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, wrong("rm -rf %s: %v: %s", dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		return 0, wrong("%s still there after rm -rf (%v)", dir, err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if e.Name() == "tree" {
			return 0, wrong("%s: readdir still lists tree", root)
		}
	}
	return d, nil
}

package bench

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/stratafs/strata/overlay"
	"golang.org/x/sys/unix"
)

// Options configure Run.
type Options struct {
	Spec Spec
	// Backends are backend names; empty means every available one.
	Backends []string
	// Workloads are names or path.Match patterns; empty means all.
	Workloads []string
	// States overrides each workload's default cache states when set.
	// Warm never applies to a mutating workload; one left with no state
	// runs in remount.
	States []CacheState
	// ReadOnlyStates, when set and States is not, replaces the default
	// states (all three) of the read-only workloads.
	ReadOnlyStates []CacheState
	Rounds         int
	// Out is the directory that receives the data dir (and the reports,
	// written by the caller).
	Out string
	// Keep leaves the generated data in place (with the image: the image
	// file, unmounted).
	Keep bool
	// NoImage puts the data directly under Out instead of on a fresh
	// loop-mounted ext4 image (see image_linux.go).
	NoImage bool
	// Settle is the pause after each mutating run (after a sync; read-only
	// runs only sync); workloads are separated by four times as much. On
	// the data image (no discard) none is needed.
	Settle time.Duration
	// Progress receives a progress line per run; nil for none. With
	// ProgressTTY the line is redrawn in place.
	Progress    io.Writer
	ProgressTTY bool
	// Stop, when closed, ends the run after the current sample; Run then
	// cleans up and returns ErrInterrupted with what was measured.
	Stop <-chan struct{}
	// AllBackends overrides AllBackends (tests).
	AllBackends func(scratch string) []Backend
}

// Sample is one timed run.
type Sample struct {
	Workload string     `json:"workload"`
	State    CacheState `json:"state"`
	Backend  string     `json:"backend"`
	Round    int        `json:"round"`
	Seconds  float64    `json:"seconds"`
	// WallSeconds is the whole run: priming, mount, workload, checks,
	// unmount, cleanup and settling.
	WallSeconds float64 `json:"wall_seconds"`
	// Err is set when the run failed; Wrong when its result check failed.
	Err   string `json:"error,omitempty"`
	Wrong bool   `json:"wrong,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Machine    Machine           `json:"machine"`
	Spec       Spec              `json:"spec"`
	Rounds     int               `json:"rounds"`
	Backends   []string          `json:"backends"`
	Skipped    []BackendStatus   `json:"skipped_backends,omitempty"`
	Durability map[string]string `json:"copy_up_durability"`
	Workloads  []WorkloadInfo    `json:"workloads"`
	Notes      []string          `json:"notes,omitempty"`
	Started    time.Time         `json:"started"`
	Elapsed    float64           `json:"elapsed_seconds"`
	Samples    []Sample          `json:"samples"`
	DataDir    string            `json:"data_dir,omitempty"`
}

// WorkloadInfo describes a workload in the report.
type WorkloadInfo struct {
	Name    string       `json:"name"`
	Desc    string       `json:"description"`
	Mutates bool         `json:"mutates"`
	States  []CacheState `json:"states"`
}

// Failed counts the samples that failed or were wrong.
func (r *Report) Failed() int {
	n := 0
	for _, s := range r.Samples {
		if s.Err != "" {
			n++
		}
	}
	return n
}

// Run generates the layer set, runs the workloads on the backends and
// returns every sample. A backend named in o.Backends that cannot run, or
// any failed mount, is an error: the run stops. A wrong or failed workload
// result is recorded in its sample and the run goes on.
func Run(o Options) (rep *Report, err error) {
	if o.Rounds < 1 {
		o.Rounds = 1
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	out, err := filepath.Abs(o.Out)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	data, err := os.MkdirTemp(out, "data-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var image *dataImage
	defer func() {
		if uerr := unmountUnder(data, image != nil); uerr != nil {
			err = errors.Join(err, uerr)
			return // never remove a tree that may still hold a mount
		}
		if image != nil {
			if ierr := image.close(o.Keep); ierr != nil {
				err = errors.Join(err, ierr)
				return
			}
			if rerr := os.Remove(data); rerr != nil && err == nil {
				err = fmt.Errorf("bench: remove %s: %w", data, rerr)
			}
			return
		}
		if !o.Keep {
			if rerr := os.RemoveAll(data); rerr != nil && err == nil {
				err = fmt.Errorf("bench: remove %s: %w", data, rerr)
			}
		}
	}()
	newBackends := o.AllBackends
	if newBackends == nil {
		newBackends = AllBackends
	}
	// Backends keep private state (flattened copies, empty upper dirs)
	// here, whichever of them are selected.
	scratch := filepath.Join(data, "scratch")
	backends, skipped, err := SelectBackends(newBackends(scratch), o.Backends)
	if err != nil {
		return nil, err
	}
	need, what := Spec.EstimateBytes, "the layer set and run need"
	if !o.NoImage {
		need, what = imageBytes, "the data image (--no-image needs less) needs"
	}
	spec, note, err := fitSpec(o.Spec, out, need, what)
	if err != nil {
		return nil, err
	}
	storage := "directly on the host filesystem (--no-image)"
	if !o.NoImage {
		o.progress("creating the %d MiB ext4 data image ...", imageBytes(spec)>>20)
		if image, err = createImage(data+".img", data, imageBytes(spec)); err != nil {
			return nil, err
		}
		storage = image.describe()
	}
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	rep = &Report{Spec: spec, Rounds: o.Rounds, Skipped: skipped, Durability: map[string]string{}, Started: time.Now().UTC()}
	if note != "" {
		rep.Notes = append(rep.Notes, note)
	}
	if o.Keep {
		rep.DataDir = data
		if image != nil {
			rep.DataDir = image.file
			rep.Notes = append(rep.Notes, fmt.Sprintf("kept data image %s: mount it with mount -o loop %s DIR", image.file, image.file))
		}
	}
	for _, b := range backends {
		rep.Backends = append(rep.Backends, b.Name())
		rep.Durability[b.Name()] = durability(b)
	}
	// Kernel mount options are limited to one page: reach the layers
	// through a short symlink so that 128-layer stacks fit.
	aliasDir, err := os.MkdirTemp("", "sb")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(aliasDir) // the symlink only, never its target
	alias := filepath.Join(aliasDir, "d")
	if err := os.Symlink(data, alias); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	layersRoot := filepath.Join(alias, "l")
	o.progress("generating layer set (seed %d, large file %d MiB) ...", spec.Seed, spec.LargeSize>>20)
	ls, err := Generate(layersRoot, spec)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("each of the %d generated layers carries its name index next to it (LAYER%s, written untimed after generation, as the snapshotter does at commit); strata mount (strata-fuse) reads it, the other backends ignore it", len(ls.Layers()), overlay.IndexSuffix))
	ws, err := SelectWorkloads(Workloads(ls), o.Workloads)
	if err != nil {
		return nil, err
	}
	if len(ls.Git) == 0 && ls.GitSkipped != "" {
		ws = slices.DeleteFunc(ws, func(w Workload) bool { return w.Name == "git-status" })
		rep.Notes = append(rep.Notes, "git-status skipped: "+ls.GitSkipped)
	}
	env := Env{}
	env.Git, _ = exec.LookPath("git")
	if p, err := exec.LookPath("fio"); err == nil {
		env.FIO = p
		rep.Notes = append(rep.Notes, "randread-large uses fio (psync, invalidate=0); its result check is the byte count fio reports")
	} else {
		rep.Notes = append(rep.Notes, "randread-large uses the Go pread loop (fio not installed); every block's CRC is checked")
	}
	rep.Machine = Probe(data)
	rep.Machine.Data, rep.Machine.HostFS = storage, hostFS(out)
	r := &runner{o: o, ls: ls, env: env, data: data}
	total := 0
	for _, w := range ws {
		total += len(r.states(w)) * o.Rounds * len(backends)
	}
	start := time.Now()
	for _, w := range ws {
		rep.Workloads = append(rep.Workloads, WorkloadInfo{Name: w.Name, Desc: w.Desc, Mutates: w.Mutates, States: r.states(w)})
		for _, st := range r.states(w) {
			for round := 0; round < o.Rounds; round++ {
				r.lowersRead = false
				for i := range backends {
					select {
					case <-o.Stop:
						rep.Elapsed = time.Since(start).Seconds()
						return rep, fmt.Errorf("bench: %w after %d of %d runs", ErrInterrupted, r.done, total)
					default:
					}
					b := backends[(i+round)%len(backends)] // rotate who goes first
					r.done++
					o.progress("%4.0fs [%d/%d] %s %s %s round %d", time.Since(start).Seconds(), r.done, total, w.Name, st, b.Name(), round+1)
					s, err := r.one(b, w, st)
					if err != nil {
						return rep, err
					}
					s.Round = round
					rep.Samples = append(rep.Samples, s)
				}
			}
		}
		if err := r.settle(4 * o.Settle); err != nil {
			return rep, err
		}
	}
	rep.Elapsed = time.Since(start).Seconds()
	if o.Progress != nil && o.ProgressTTY {
		fmt.Fprintln(o.Progress)
	}
	return rep, nil
}

func (o Options) progress(format string, a ...any) {
	if o.Progress == nil {
		return
	}
	if o.ProgressTTY {
		fmt.Fprintf(o.Progress, "\r\033[K"+format, a...)
		return
	}
	fmt.Fprintf(o.Progress, format+"\n", a...)
}

type runner struct {
	o    Options
	ls   *LayerSet
	env  Env
	data string
	done int
	seq  int
	// lowersRead: this round of a mutating workload in remount already
	// read the lower layers into the page cache.
	lowersRead bool
}

func (r *runner) states(w Workload) []CacheState {
	if len(r.o.States) == 0 {
		if w.warmable() && len(w.OwnStates) == 0 && len(r.o.ReadOnlyStates) > 0 {
			return r.o.ReadOnlyStates
		}
		return w.States()
	}
	var out []CacheState
	for _, s := range r.o.States {
		if s == Warm && !w.warmable() {
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		out = []CacheState{Remount}
	}
	return out
}

// settle syncs the data filesystem and pauses for d.
func (r *runner) settle(d time.Duration) error {
	if err := syncFS(r.data); err != nil {
		return err
	}
	time.Sleep(d)
	return nil
}

// syncFS syncs the filesystem holding dir only (syncfs(2)): a global sync
// would also wait for whatever else the machine is writing.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bench: syncfs %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(fd) }() // read-only
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("bench: syncfs %s: %w", dir, err)
	}
	return nil
}

// DropCaches syncs and drops the page cache, dentries and inodes.
func DropCaches() error {
	unix.Sync()
	return dropCaches()
}

func dropCaches() error {
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// dropCaches syncs the data filesystem (only its dirty pages matter) and
// drops the page cache, dentries and inodes.
func (r *runner) dropCaches() error {
	if err := syncFS(r.data); err != nil {
		return err
	}
	return dropCaches()
}

// mounted is one mount of a run.
type mounted struct {
	root       string
	unmount    func() error
	upper, dir string
	took       time.Duration // the backend's Mount call
}

func (r *runner) mount(b Backend, w Workload, writable bool) (*mounted, error) {
	r.seq++
	dir := filepath.Join(r.data, "run", fmt.Sprint(r.seq))
	m := &mounted{root: filepath.Join(dir, "mnt"), dir: dir}
	if err := os.MkdirAll(m.root, 0o755); err != nil {
		return nil, err
	}
	var upper, work string
	if writable {
		upper, work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
		for _, p := range []string{upper, work} {
			if err := os.Mkdir(p, 0o755); err != nil {
				return nil, err
			}
		}
	}
	start := time.Now()
	un, err := b.Mount(w.Stack(r.ls), upper, work, m.root)
	m.took = time.Since(start)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: %s: mount for %s: %w", b.Name(), w.Name, err)
	}
	m.unmount = un
	return m, nil
}

func (m *mounted) release() error {
	if err := m.unmount(); err != nil {
		return err
	}
	if err := os.RemoveAll(m.dir); err != nil {
		return fmt.Errorf("bench: remove %s: %w", m.dir, err)
	}
	return nil
}

// one runs w once on b in cache state st. Its error is fatal (mount,
// unmount, drop_caches); workload failures go into the sample.
func (r *runner) one(b Backend, w Workload, st CacheState) (s Sample, err error) {
	s = Sample{Workload: w.Name, State: st, Backend: b.Name()}
	began := time.Now()
	defer func() { s.WallSeconds = time.Since(began).Seconds() }()
	record := func(d time.Duration, werr error) {
		s.Seconds = d.Seconds()
		if werr != nil {
			s.Err = werr.Error()
			s.Wrong = errors.Is(werr, ErrWrongResult)
		}
	}
	if p, ok := b.(Preparer); ok {
		var fixup func(string) error
		if w.Fixup != nil {
			fixup = func(dir string) error { return w.Fixup(r.ls, dir) }
		}
		if err := p.Prepare(w.Stack(r.ls), fixup); err != nil {
			return s, fmt.Errorf("bench: %s: prepare for %s: %w", b.Name(), w.Name, err)
		}
	}
	switch st {
	case Remount:
		if w.Mutates {
			// Read the lower layers themselves, once per round: every
			// backend's lower files are then in the page cache (nothing
			// in a mutating round drops it).
			if r.lowersRead {
				break
			}
			r.lowersRead = true
			for _, l := range w.Stack(r.ls) {
				if err := warmTree(l); err != nil {
					return s, fmt.Errorf("bench: prime %s: %w", l, err)
				}
			}
			break
		}
		// Run the workload once through a throwaway mount.
		m, err := r.mount(b, w, false)
		if err != nil {
			return s, err
		}
		_, err = w.Run(r.ls, m.root, r.env)
		if rerr := m.release(); rerr != nil {
			return s, rerr
		}
		if err != nil {
			record(0, fmt.Errorf("priming run: %w", err))
			return s, nil
		}
	case Cold, Warm:
	default:
		return s, fmt.Errorf("bench: unknown cache state %q", st)
	}
	if st == Cold && w.TimesMount {
		if err := r.dropCaches(); err != nil {
			return s, err
		}
	}
	m, err := r.mount(b, w, w.Mutates)
	if err != nil {
		return s, err
	}
	defer func() {
		if rerr := m.release(); rerr != nil && err == nil {
			err = rerr
		}
		d := time.Duration(0)
		if w.Mutates {
			d = r.o.Settle // let the host's ext4 settle after the writes and the removal
		}
		if serr := r.settle(d); serr != nil && err == nil {
			err = serr
		}
	}()
	switch {
	case st == Cold && !w.TimesMount:
		if err := r.dropCaches(); err != nil {
			return s, err
		}
	case st == Warm:
		if _, werr := w.Run(r.ls, m.root, r.env); werr != nil {
			record(0, fmt.Errorf("warm-up run: %w", werr))
			return s, nil
		}
	}
	d, werr := w.Run(r.ls, m.root, r.env)
	if w.TimesMount {
		d += m.took
	}
	record(d, werr)
	return s, nil
}

// warmTree reads every file under root once.
func warmTree(root string) error {
	buf := make([]byte, 1<<20)
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		return err
	})
}

// Stats summarizes the samples of one (workload, state, backend).
type Stats struct {
	Median, Min, Max float64
	N                int
	Failed           int
	FirstErr         string
}

func stats(samples []Sample) Stats {
	var st Stats
	var xs []float64
	for _, s := range samples {
		if s.Err != "" {
			st.Failed++
			if st.FirstErr == "" {
				st.FirstErr = s.Err
			}
			continue
		}
		xs = append(xs, s.Seconds)
	}
	st.N = len(xs)
	if len(xs) == 0 {
		return st
	}
	slices.Sort(xs)
	st.Min, st.Max = xs[0], xs[len(xs)-1]
	if len(xs)%2 == 1 {
		st.Median = xs[len(xs)/2]
	} else {
		st.Median = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return st
}

// unmountUnder detaches every mount at or below dir (deepest first; only
// those strictly below it with below), so that removing dir after a failed
// run never walks into a live mount.
func unmountUnder(dir string, below bool) error {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	targets, err := overlay.MountsUnder(dir)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var errs []error
	for i := len(targets) - 1; i >= 0; i-- {
		if below && targets[i] == dir {
			continue
		}
		if err := unix.Unmount(targets[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("bench: unmount %s: %w", targets[i], err))
		}
	}
	return errors.Join(errs...)
}

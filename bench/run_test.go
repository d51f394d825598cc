package bench

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

// noStrataBin makes strata-fuse unavailable: its binary is missing.
func noStrataBin(t *testing.T) { t.Setenv(StrataBinEnv, filepath.Join(t.TempDir(), "no-strata")) }

func TestUnavailableBackendIsAnError(t *testing.T) {
	noStrataBin(t)
	_, err := Run(Options{Spec: tinySpec(1), Backends: []string{"strata-fuse"}, Out: t.TempDir()})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Run with strata-fuse: %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "strata-fuse") {
		t.Fatalf("error does not name the backend: %v", err)
	}
	_, err = Run(Options{Spec: tinySpec(1), Backends: []string{"no-such"}, Out: t.TempDir()})
	if !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("Run with an unknown backend: %v, want ErrUnknownBackend", err)
	}
}

func TestDefaultSelectionSkipsUnavailable(t *testing.T) {
	noStrataBin(t)
	all := AllBackends(t.TempDir())
	_, skipped, _ := SelectBackends(all, nil)
	found := false
	for _, s := range skipped {
		if s.Name == "strata-fuse" && errors.Is(s.Err, ErrUnavailable) {
			found = true
		}
	}
	if !found {
		t.Fatalf("strata-fuse not listed as skipped: %+v", skipped)
	}
}

func TestSmokeKernel(t *testing.T) {
	testutil.RequireOverlay(t)
	smoke(t, "kernel-overlayfs")
}

// TestSmokeStrataFUSE runs the harness on strata's FUSE backend through a
// freshly built strata binary, as `make bench-backends` does.
func TestSmokeStrataFUSE(t *testing.T) {
	testutil.RequireFUSE(t)
	bin := filepath.Join(t.TempDir(), "strata")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/strata").CombinedOutput(); err != nil {
		t.Fatalf("build strata: %v\n%s", err, out)
	}
	t.Setenv(StrataBinEnv, bin)
	smoke(t, "strata-fuse")
}

// smoke runs a few workloads on backend, on the data image (remount) and
// directly in the output dir (warm).
func smoke(t *testing.T, backend string) {
	for _, st := range []CacheState{Warm, Remount} {
		out := t.TempDir()
		rep, err := Run(Options{
			Spec:      tinySpec(1),
			Backends:  []string{backend},
			Workloads: []string{"readdir-wide", "stat-*-d4", "append-large", "mount-d4"},
			States:    []CacheState{st},
			Rounds:    1,
			Out:       out,
			NoImage:   st == Warm,
		})
		if err != nil {
			t.Fatal(err)
		}
		if ents, err := os.ReadDir(out); err != nil || len(ents) > 0 {
			t.Fatalf("%s: Run left %v in its output dir (%v)", st, ents, err)
		}
		if st == Remount && !strings.Contains(rep.Machine.Data, "ext4 image") {
			t.Fatalf("%s: report does not say the data was on the image: %q", st, rep.Machine.Data)
		}
		// mount-d4 cannot run warm: it runs in remount then.
		if len(rep.Samples) != 5 {
			t.Fatalf("%s: %d samples, want 5", st, len(rep.Samples))
		}
		for _, s := range rep.Samples {
			if s.Err != "" {
				t.Errorf("%s %s: %s", s.Workload, s.State, s.Err)
			}
		}
		var md strings.Builder
		if err := rep.WriteMarkdown(&md); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(md.String(), "| readdir-wide | "+string(st)+" | "+backend+" |") {
			t.Fatalf("markdown lacks the readdir-wide row:\n%s", md.String())
		}
	}
}

func TestSelectWorkloadsUnknown(t *testing.T) {
	ws := []Workload{{Name: "a"}, {Name: "b-1"}}
	if got, err := SelectWorkloads(ws, []string{"b-*"}); err != nil || len(got) != 1 {
		t.Fatalf("pattern b-*: %v %v", got, err)
	}
	if _, err := SelectWorkloads(ws, []string{"zzz"}); !errors.Is(err, ErrUnknownWorkload) {
		t.Fatalf("unknown workload: %v", err)
	}
}

func TestUnmountUnder(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "a b", "mnt")
	for _, p := range []string{src, target} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	un, err := bindMount(src, target, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = un() })
	if err := unmountUnder(dir, false); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(b), strings.ReplaceAll(target, " ", `\040`)) {
		t.Fatalf("%s still mounted", target)
	}
}

// topOnly is a deliberately wrong backend: it shows the topmost layer only.
type topOnly struct{ failMount bool }

func (topOnly) Name() string     { return "top-only" }
func (topOnly) Available() error { return nil }
func (b topOnly) Mount(layers []string, upper, work, target string) (func() error, error) {
	if b.failMount {
		return nil, errors.New("top-only: refusing to mount")
	}
	return bindMount(layers[0], target, true)
}

func TestWrongBackendIsReportedWrong(t *testing.T) {
	testutil.RequireRoot(t)
	rep, err := Run(Options{
		Spec:        tinySpec(1),
		Backends:    []string{"top-only"},
		Workloads:   []string{"readdir-wide", "find-walk"},
		States:      []CacheState{Warm},
		Rounds:      1,
		Out:         t.TempDir(),
		NoImage:     true,
		AllBackends: func(string) []Backend { return []Backend{topOnly{}} },
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed() != 2 {
		t.Fatalf("%d failed samples, want 2: %+v", rep.Failed(), rep.Samples)
	}
	for _, s := range rep.Samples {
		if !s.Wrong {
			t.Errorf("%s: not marked wrong: %s", s.Workload, s.Err)
		}
	}
	var md strings.Builder
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "**WRONG**") {
		t.Fatalf("table does not say WRONG:\n%s", md.String())
	}
}

func TestMountFailureStopsTheRun(t *testing.T) {
	testutil.RequireRoot(t)
	_, err := Run(Options{
		Spec:        tinySpec(1),
		Backends:    []string{"top-only"},
		Workloads:   []string{"readdir-wide"},
		Rounds:      1,
		Out:         t.TempDir(),
		NoImage:     true,
		AllBackends: func(string) []Backend { return []Backend{topOnly{failMount: true}} },
	})
	if err == nil || !strings.Contains(err.Error(), "refusing to mount") {
		t.Fatalf("Run with a failing mount: %v, want the mount error", err)
	}
}

// Command strata-bench runs strata's cross-backend benchmark: it generates
// a layer set from a seed, mounts it with each backend, runs checked
// workloads in several cache states and writes a Markdown table (stdout),
// report.json and chart.svg (in --out). See bench/README.md.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/stratafs/strata/bench"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "strata-bench: %v\n", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func run(args []string) error {
	fs := flag.NewFlagSet("strata-bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "small layer set, 2 rounds, cache states cold and warm (mutating workloads: cold only); under 3 minutes")
	backends := fs.String("backends", "", "comma-separated backends (default: every available one); a named backend that cannot run is an error")
	workloads := fs.String("workloads", "", "comma-separated workload names or patterns like 'stat-*' (default: all)")
	states := fs.String("states", "", "comma-separated cache states cold,remount,warm (default: read-only workloads cold,warm, mutating remount; --quick: cold,warm)")
	rounds := fs.Int("rounds", 0, "rounds per workload and cache state (default 3; 2 with --quick)")
	seed := fs.Uint64("seed", 1, "seed of the layer set")
	out := fs.String("out", "bench-out", "output dir for report.json, chart.svg, report.md and the (temporary) data")
	keep := fs.Bool("keep", false, "keep the generated layers and mounts' data in --out")
	list := fs.Bool("list", false, "list backends with their availability and workloads, then exit")
	render := fs.String("render", "", "re-render report.md and chart.svg into --out from this report.json, print the table, and exit")
	noImage := fs.Bool("no-image", false, "keep the data directly under --out instead of on a fresh loop-mounted ext4 image")
	largeMiB := fs.Int64("large-mib", 0, "size of the large file in MiB (default 1024; 64 with --quick)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *list {
		return listAll(*backends)
	}
	if *render != "" {
		return rerender(*render, *out)
	}
	spec := bench.FullSpec(*seed)
	o := bench.Options{Rounds: 3}
	// To fit 20 minutes with five backends, read-only workloads run cold
	// and warm by default (--states cold,remount,warm for all three);
	// mutating ones run in remount.
	o.ReadOnlyStates = []bench.CacheState{bench.Cold, bench.Warm}
	if *quick {
		spec = bench.QuickSpec(*seed)
		o.Rounds = 2
		o.States = []bench.CacheState{bench.Cold, bench.Warm} // mutating workloads: cold
	}
	if *largeMiB > 0 {
		spec.LargeSize = *largeMiB << 20
	}
	if *rounds > 0 {
		o.Rounds = *rounds
	}
	o.Spec, o.Out, o.Keep, o.NoImage = spec, *out, *keep, *noImage
	if *noImage {
		// The host fs may discard: let it settle after each mutating run.
		o.Settle = 100 * time.Millisecond
		if *quick {
			o.Settle = 20 * time.Millisecond
		}
	}
	o.Backends, o.Workloads = splitList(*backends), splitList(*workloads)
	if *states != "" {
		o.States = nil
	}
	for _, s := range splitList(*states) {
		switch st := bench.CacheState(s); st {
		case bench.Cold, bench.Remount, bench.Warm:
			o.States = append(o.States, st)
		default:
			return fmt.Errorf("--states: unknown cache state %q (cold, remount, warm)", s)
		}
	}
	o.Progress = os.Stderr
	_, terr := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	o.ProgressTTY = terr == nil

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stop := make(chan struct{})
	go func() {
		if _, ok := <-sigs; ok {
			fmt.Fprintln(os.Stderr, "\nstrata-bench: interrupted; finishing the current run, then unmounting and cleaning up")
			close(stop)
		}
	}()
	o.Stop = stop

	started := time.Now()
	rep, err := bench.Run(o)
	if err != nil {
		if rep != nil && len(rep.Samples) > 0 {
			_ = write(rep, *out) // keep what was measured
		}
		return err
	}
	if err := write(rep, *out); err != nil {
		return err
	}
	if err := rep.WriteMarkdown(os.Stdout); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "strata-bench: done in %s; wrote %s, %s, %s\n", time.Since(started).Round(time.Second),
		filepath.Join(*out, "report.md"), filepath.Join(*out, "report.json"), filepath.Join(*out, "chart.svg"))
	if n := rep.Failed(); n > 0 {
		return fmt.Errorf("%d runs failed or gave wrong results (see the table): %w", n, bench.ErrWrongResult)
	}
	return nil
}

func write(rep *bench.Report, out string) error {
	files := []struct {
		name string
		fn   func(*os.File) error
	}{
		{"report.json", func(f *os.File) error { return rep.WriteJSON(f) }},
		{"report.md", func(f *os.File) error { return rep.WriteMarkdown(f) }},
		{"chart.svg", func(f *os.File) error { return rep.WriteSVG(f) }},
	}
	var errs []error
	for _, x := range files {
		p := filepath.Join(out, x.name)
		f, err := os.Create(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = x.fn(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func listAll(names string) error {
	all := bench.AllBackends(os.TempDir())
	fmt.Println("backends:")
	for _, st := range bench.ListBackends(all) {
		if st.Err == nil {
			fmt.Printf("  %-18s available\n", st.Name)
		} else {
			fmt.Printf("  %-18s UNAVAILABLE: %s\n", st.Name, st.Reason)
		}
	}
	fmt.Println("workloads: stat-hit-dN, stat-miss-dN (N in 1,8,32,128), mount-d128, readdir-wide, find-walk, read-all, seqread-large,")
	fmt.Println("           randread-large, git-status, append-large, chmod-large, touch-wide, create-files, untar, rm-tree")
	if n := splitList(names); len(n) > 0 {
		if _, _, err := bench.SelectBackends(all, n); err != nil {
			return err
		}
	}
	return nil
}

func rerender(from, out string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, fn := range map[string]func(io.Writer) error{"report.md": rep.WriteMarkdown, "chart.svg": rep.WriteSVG} {
		var buf bytes.Buffer
		if err := fn(&buf); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return rep.WriteMarkdown(os.Stdout)
}

package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Reference backends for the ratio columns.
const (
	RefKernel = "kernel-overlayfs"
	RefFUSE   = "fuse-overlayfs"
)

// Row is the summary of one (workload, cache state, backend).
type Row struct {
	Workload string
	State    CacheState
	Backend  string
	Mutates  bool
	Stats
	// VsKernel and VsFUSE are median ratios to the reference backends,
	// 0 when unknown.
	VsKernel, VsFUSE float64
}

// Rows summarizes the samples, in report order.
func (r *Report) Rows() []Row {
	by := map[[3]string][]Sample{}
	for _, s := range r.Samples {
		k := [3]string{s.Workload, string(s.State), s.Backend}
		by[k] = append(by[k], s)
	}
	var rows []Row
	for _, w := range r.Workloads {
		for _, st := range w.States {
			med := func(b string) float64 {
				s := stats(by[[3]string{w.Name, string(st), b}])
				if s.Failed > 0 {
					return 0
				}
				return s.Median
			}
			k, f := med(RefKernel), med(RefFUSE)
			for _, b := range r.Backends {
				row := Row{Workload: w.Name, State: st, Backend: b, Mutates: w.Mutates,
					Stats: stats(by[[3]string{w.Name, string(st), b}])}
				if row.Failed == 0 && row.N > 0 {
					if k > 0 {
						row.VsKernel = row.Median / k
					}
					if f > 0 {
						row.VsFUSE = row.Median / f
					}
				}
				rows = append(rows, row)
			}
		}
	}
	return rows
}

func fmtDur(s float64) string {
	switch {
	case s < 1e-3:
		return fmt.Sprintf("%.0f µs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.3g ms", s*1e3)
	default:
		return fmt.Sprintf("%.3g s", s)
	}
}

func fmtRatio(x float64) string {
	if x == 0 {
		return "–"
	}
	if x < 10 {
		return fmt.Sprintf("%.2f×", x)
	}
	return fmt.Sprintf("%.0f×", x)
}

// WriteMarkdown writes the report as Markdown tables.
func (r *Report) WriteMarkdown(w io.Writer) error {
	m := r.Machine
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on Linux %s, %d × %s, %d MiB RAM, %s; %s; %s; %s.\n",
		r.Started.Format("2006-01-02 15:04 MST"), m.Kernel, m.CPUs, m.CPU, m.MemoryMiB, m.FSType, m.Go, m.FuseOverlayfs, m.FIO)
	if m.Data != "" {
		fmt.Fprintf(&b, "Data %s; host filesystem: %s.\n", m.Data, m.HostFS)
	}
	fmt.Fprintf(&b, "Seed %d, %d rounds (median, min–max), main stack %d layers, large file %d MiB, wide dir %d names over %d layers, %d-file tarball. Run time %.0f s.\n\n",
		r.Spec.Seed, r.Rounds, r.Spec.Layers, r.Spec.LargeSize>>20, r.Spec.WideEntries, r.Spec.WideLayers, r.Spec.TarFiles, r.Elapsed)
	rows := r.Rows()
	// Summary: one line per workload and cache state.
	b.WriteString("| workload | cache |")
	for _, be := range r.Backends {
		fmt.Fprintf(&b, " %s |", be)
	}
	b.WriteString("\n| --- | --- |" + strings.Repeat(" ---: |", len(r.Backends)) + "\n")
	for i := 0; i < len(rows); i += len(r.Backends) {
		fmt.Fprintf(&b, "| %s | %s |", rows[i].Workload, rows[i].State)
		for _, row := range rows[i : i+len(r.Backends)] {
			switch {
			case row.Failed > 0 && strings.Contains(row.FirstErr, ErrWrongResult.Error()):
				b.WriteString(" **WRONG** |")
			case row.Failed > 0:
				b.WriteString(" **FAILED** |")
			case row.Backend == RefKernel || row.VsKernel == 0:
				fmt.Fprintf(&b, " %s |", fmtDur(row.Median))
			default:
				fmt.Fprintf(&b, " %s (%s) |", fmtDur(row.Median), fmtRatio(row.VsKernel))
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nMedians; in parentheses the ratio to %s (lower is faster). Details:\n\n", RefKernel)
	fmt.Fprintf(&b, "| workload | cache | backend | median | min–max | × %s | × %s | copy-up durability |\n", RefKernel, RefFUSE)
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |\n")
	for _, row := range rows {
		med, rng := fmtDur(row.Median), fmtDur(row.Min)+"–"+fmtDur(row.Max)
		if row.Failed > 0 {
			med, rng = "**FAILED**", fmt.Sprintf("%d of %d runs: %s", row.Failed, row.Failed+row.N, mdEscape(row.FirstErr))
			if strings.Contains(row.FirstErr, ErrWrongResult.Error()) {
				med = "**WRONG**"
			}
		}
		dur := "–"
		if row.Mutates {
			dur = r.Durability[row.Backend]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			row.Workload, row.State, row.Backend, med, rng, fmtRatio(row.VsKernel), fmtRatio(row.VsFUSE), dur)
	}
	b.WriteString("\nWorkloads:\n\n")
	for _, wi := range r.Workloads {
		fmt.Fprintf(&b, "- `%s`: %s\n", wi.Name, wi.Desc)
	}
	if len(r.Skipped) > 0 {
		b.WriteString("\nSkipped backends:\n\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(&b, "- `%s`: %s\n", s.Name, s.Reason)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mdEscape(s string) string {
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// WriteJSON writes the whole report, every sample included.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"}

// WriteSVG draws grouped bars of each backend's median ratio to
// kernel-overlayfs (log scale), one group per workload and cache state.
func (r *Report) WriteSVG(w io.Writer) error {
	var bars []string
	for _, b := range r.Backends {
		if b != RefKernel {
			bars = append(bars, b)
		}
	}
	type group struct {
		label  string
		ratios map[string]float64
	}
	var groups []group
	var g *group
	lo, hi := 1.0, 1.0
	for _, row := range r.Rows() {
		label := row.Workload + " (" + string(row.State) + ")"
		if g == nil || g.label != label {
			groups = append(groups, group{label: label, ratios: map[string]float64{}})
			g = &groups[len(groups)-1]
		}
		if row.Backend != RefKernel && row.VsKernel > 0 {
			g.ratios[row.Backend] = row.VsKernel
			lo, hi = math.Min(lo, row.VsKernel), math.Max(hi, row.VsKernel)
		}
	}
	// Clip the axis to 0.01×..1000× so that a few extreme ratios (native
	// has no copy-up at all) do not flatten every other bar; clipped bars
	// carry their value as a label.
	lo, hi = math.Max(lo, 0.01), math.Min(hi, 1000)
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi == dlo {
		dhi++
	}
	const (
		left, top, plotH, bottom, barW, gap = 70.0, 60.0, 320.0, 190.0, 9.0, 12.0
	)
	groupW := float64(len(bars))*barW + gap
	width := left + float64(len(groups))*groupW + 20
	height := top + plotH + bottom
	y := func(v float64) float64 { return top + plotH*(dhi-math.Log10(v))/(dhi-dlo) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">Median time relative to kernel overlayfs (log scale, clipped to 0.01×–1000×; lower is faster)</text>`+"\n", left)
	for i, name := range bars {
		x := left + float64(i)*150
		fmt.Fprintf(&b, `<rect x="%.0f" y="32" width="12" height="12" fill="%s"/><text x="%.0f" y="42">%s</text>`+"\n", x, palette[i%len(palette)], x+16, html.EscapeString(name))
	}
	for d := dlo; d <= dhi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > dhi+1e-9 {
				break
			}
			yy := y(v)
			stroke, lbl := "#eee", ""
			if m == 1 {
				stroke, lbl = "#ccc", fmtRatio(v)
				if v < 0.01 {
					lbl = fmt.Sprintf("%g×", v)
				}
			}
			if v == 1 {
				stroke = "#000"
			}
			fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left, width-20, yy, yy, stroke)
			if lbl != "" {
				fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, yy+4, lbl)
			}
		}
	}
	base := y(1)
	for gi, g := range groups {
		x0 := left + float64(gi)*groupW + gap/2
		for bi, name := range bars {
			v, ok := g.ratios[name]
			if !ok {
				continue
			}
			yy := y(math.Min(math.Max(v, math.Pow(10, dlo)), math.Pow(10, dhi)))
			y1, h := math.Min(yy, base), math.Abs(yy-base)
			if clipped := v < math.Pow(10, dlo) || v > math.Pow(10, dhi); clipped {
				// The value, written along the clipped bar's end.
				tx, ty, anchor := x0+float64(bi)*barW+barW/2+3, yy-3, "start"
				if v > 1 {
					ty, anchor = yy+3, "end"
				}
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="8" fill="white" text-anchor="%s" transform="rotate(-90 %.1f %.1f)">%.0e</text>`+"\n", tx, ty, anchor, tx, ty, v)
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				x0+float64(bi)*barW, y1, barW-1, math.Max(h, 0.5), palette[bi%len(palette)], html.EscapeString(name), html.EscapeString(g.label), fmtRatio(v))
		}
		lx, ly := x0+float64(len(bars))*barW/2, top+plotH+8
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" transform="rotate(-60 %.1f %.1f)">%s</text>`+"\n", lx, ly, lx, ly, html.EscapeString(g.label))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

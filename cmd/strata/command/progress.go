package command

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// progress reports the bytes read of one layer: a bar with bytes, rate and
// ETA when w is a terminal (github.com/schollz/progressbar), one plain line
// at the end otherwise.
type progress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	label string
	total int64
	n     int64
	start time.Time
}

func newProgress(w io.Writer, label string, total int64) *progress {
	p := &progress{w: w, label: label, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { _, _ = fmt.Fprintln(w) }),
		)
	}
	return p
}

// add counts n more bytes read.
func (p *progress) add(n int) {
	p.n += int64(n)
	if p.bar != nil {
		_ = p.bar.Add(n)
	}
}

// done finishes the bar, or prints the plain line.
func (p *progress) done(note string) {
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	el := time.Since(p.start)
	rate := float64(p.n) / el.Seconds()
	_, _ = fmt.Fprintf(p.w, "%s: %s in %s (%s/s)%s\n", p.label, humanSize(p.n), el.Round(time.Millisecond), humanSize(int64(rate)), note)
}

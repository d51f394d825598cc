package archive

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

const (
	benchFiles = 20000
	benchBytes = 100 << 20
)

var (
	benchOnce    sync.Once
	benchPlain   []byte
	benchStreams map[Compression][]byte
)

// benchLayer generates a 20k-file, ~100 MB layer: 200 dirs, 19,900 small
// files (0-5 KiB) and 100 large ones sharing the rest, content half random
// and half text so that it compresses like real binaries do.
func benchLayer(b *testing.B) ([]byte, map[Compression][]byte) {
	benchOnce.Do(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		var buf bytes.Buffer
		buf.Grow(benchBytes + benchFiles*1536)
		tw := tar.NewWriter(&buf)
		content := func(n int) []byte {
			p := make([]byte, n)
			for i := 0; i < n; i += 64 {
				end := min(i+64, n)
				if rng.IntN(2) == 0 {
					for j := i; j < end; j++ {
						p[j] = byte(rng.Uint32())
					}
				} else {
					copy(p[i:end], "the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit")
				}
			}
			return p
		}
		small := benchFiles - 100
		var smallTotal int
		sizes := make([]int, small)
		for i := range sizes {
			sizes[i] = rng.IntN(5 << 10)
			smallTotal += sizes[i]
		}
		large := (benchBytes - smallTotal) / 100
		for d := 0; d < 200; d++ {
			dir := fmt.Sprintf("usr/lib/pkg%03d/", d)
			must := func(err error) {
				if err != nil {
					b.Fatal(err)
				}
			}
			must(tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: t0, Format: tar.FormatPAX}))
			for f := 0; f < benchFiles/200; f++ {
				i := d*(benchFiles/200) + f
				n := large
				if i < small {
					n = sizes[i]
				}
				must(tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%sf%05d", dir, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(n), ModTime: t0, Format: tar.FormatPAX}))
				_, err := tw.Write(content(n))
				must(err)
			}
		}
		if err := tw.Close(); err != nil {
			b.Fatal(err)
		}
		benchPlain = buf.Bytes()
		benchStreams = map[Compression][]byte{Uncompressed: benchPlain}
		for _, c := range []Compression{Gzip, Zstd} {
			var out bytes.Buffer
			w, err := compressor(c, &out, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Write(benchPlain); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			benchStreams[c] = out.Bytes()
		}
	})
	return benchPlain, benchStreams
}

// BenchmarkApply imports the generated layer; MB/s is of uncompressed
// data.
func BenchmarkApply(b *testing.B) {
	plain, streams := benchLayer(b)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		b.Run(c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			root := b.TempDir()
			unix.Sync()
			var cpu time.Duration
			for i := 0; b.Loop(); i++ {
				dir := filepath.Join(root, fmt.Sprint(i))
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				before := cpuTime()
				if _, err := Apply(context.Background(), dir, bytes.NewReader(streams[c])); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - before
				b.StopTimer()
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				// Start every round with no writeback pending from the last.
				unix.Sync()
				b.StartTimer()
			}
			b.ReportMetric(float64(benchFiles)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkWriteDiff exports the imported layer.
func BenchmarkWriteDiff(b *testing.B) {
	plain, streams := benchLayer(b)
	dir := b.TempDir()
	if _, err := Apply(context.Background(), dir, bytes.NewReader(streams[Uncompressed])); err != nil {
		b.Fatal(err)
	}
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		b.Run(c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			before := cpuTime()
			for b.Loop() {
				if _, err := WriteDiff(context.Background(), io.Discard, dir, nil, WithCompression(c)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime()-before).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkDecompress compares the decoders Apply could use.
func BenchmarkDecompress(b *testing.B) {
	plain, streams := benchLayer(b)
	run := func(name string, open func(io.Reader) (io.Reader, error), in []byte) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				r, err := open(bytes.NewReader(in))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("gzip-stdlib", func(r io.Reader) (io.Reader, error) { return stdgzip.NewReader(r) }, streams[Gzip])
	run("gzip-klauspost", func(r io.Reader) (io.Reader, error) { return kgzip.NewReader(r) }, streams[Gzip])
	run("zstd-1goroutine", func(r io.Reader) (io.Reader, error) {
		return zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	}, streams[Zstd])
	run("zstd-default", func(r io.Reader) (io.Reader, error) { return zstd.NewReader(r) }, streams[Zstd])
}

// cpuTime is the user+system CPU time of the process so far. On a shared
// machine it is steadier than wall time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

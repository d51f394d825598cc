package archive

import (
	"io"
	"sync/atomic"
)

// writeBehind buffers writes in chunks and writes them to dst in a
// goroutine, so that compressing and hashing the output overlap with the
// walk that produces it (the mirror of readahead). Writes after dst failed
// return its error; Close flushes, stops the goroutine and waits for it.
type writeBehind struct {
	dst    io.Writer
	full   chan []byte
	free   chan []byte
	exited chan struct{}
	err    error       // set by the consumer before failed
	failed atomic.Bool // the producer reads err only once this is true

	cur    []byte
	closed bool
}

func newWriteBehind(dst io.Writer, chunks, size int) *writeBehind {
	w := &writeBehind{
		dst:    dst,
		full:   make(chan []byte, chunks),
		free:   make(chan []byte, chunks),
		exited: make(chan struct{}),
	}
	for i := 1; i < chunks; i++ {
		w.free <- make([]byte, 0, size)
	}
	w.cur = make([]byte, 0, size)
	go w.consume()
	return w
}

// consume writes the full chunks to dst in order. After an error it
// only recycles them, so that the producer never blocks.
func (w *writeBehind) consume() {
	defer close(w.exited)
	var err error
	for buf := range w.full {
		if err == nil {
			if _, err = w.dst.Write(buf); err != nil {
				w.err = err
				w.failed.Store(true)
			}
		}
		w.free <- buf[:0]
	}
}

func (w *writeBehind) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		m := copy(w.cur[len(w.cur):cap(w.cur)], p)
		w.cur = w.cur[:len(w.cur)+m]
		p, n = p[m:], n+m
		if len(w.cur) == cap(w.cur) {
			w.full <- w.cur
			w.cur = <-w.free
			if w.failed.Load() {
				return n, w.err
			}
		}
	}
	return n, nil
}

// Close writes what is buffered and waits until dst is no longer
// written; it returns the first error of dst.
func (w *writeBehind) Close() error {
	if !w.closed {
		w.closed = true
		if len(w.cur) > 0 {
			w.full <- w.cur
		}
		close(w.full)
	}
	<-w.exited
	return w.err
}

package archive

import "io"

// readahead reads src in a goroutine, a few chunks ahead of its consumer,
// so that decompression and hashing overlap with the extraction syscalls.
// Close stops the goroutine and waits for it: once Close returns, src is no
// longer read.
type readahead struct {
	src    io.Reader
	full   chan []byte
	free   chan []byte
	done   chan struct{}
	exited chan struct{}
	err    error // set by the producer before it closes full

	cur    []byte // unread part of the current chunk
	curBuf []byte // the whole current buffer, to recycle
	closed bool
}

func newReadahead(src io.Reader, chunks, size int) *readahead {
	r := &readahead{
		src:    src,
		full:   make(chan []byte, chunks),
		free:   make(chan []byte, chunks),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	for i := 0; i < chunks; i++ {
		r.free <- make([]byte, size)
	}
	go r.produce()
	return r
}

func (r *readahead) produce() {
	defer close(r.exited)
	defer close(r.full)
	for {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-r.done:
			return
		}
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var m int
			m, err = r.src.Read(buf[n:])
			n += m
		}
		if n > 0 {
			select {
			case r.full <- buf[:n]:
			case <-r.done:
				return
			}
		}
		if err != nil {
			r.err = err
			return
		}
	}
}

func (r *readahead) Read(p []byte) (int, error) {
	if len(r.cur) == 0 {
		if r.curBuf != nil {
			r.free <- r.curBuf
			r.curBuf = nil
		}
		chunk, ok := <-r.full
		if !ok {
			return 0, r.err
		}
		r.cur, r.curBuf = chunk, chunk[:cap(chunk)]
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the producer and waits until it no longer reads src.
func (r *readahead) Close() error {
	if !r.closed {
		r.closed = true
		close(r.done)
	}
	<-r.exited
	return nil
}

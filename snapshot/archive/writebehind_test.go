package archive

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestWriteBehindCopiesInOrder(t *testing.T) {
	var out bytes.Buffer
	w := newWriteBehind(&out, 3, 7)
	var want bytes.Buffer
	for i := range 100 {
		p := bytes.Repeat([]byte{byte(i)}, i%13)
		want.Write(p)
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d (or content differs)", out.Len(), want.Len())
	}
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	f.n--
	return len(p), nil
}

func TestWriteBehindReportsWriteError(t *testing.T) {
	boom := errors.New("boom")
	w := newWriteBehind(&failAfter{n: 2, err: boom}, 2, 4)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = w.Write([]byte("0123456789"))
	}
	if !errors.Is(err, boom) {
		t.Fatalf("write error %v, want %v", err, boom)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("close error %v, want %v", err, boom)
	}
}

func TestWriteBehindCloseWithoutWrites(t *testing.T) {
	w := newWriteBehind(io.Discard, 2, 4)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

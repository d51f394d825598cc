package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

func hitsString(h []IndexHit) string {
	s := ""
	for _, x := range h {
		s += fmt.Sprintf("%d:%o", x.Dir, x.Type>>12)
		if x.Whiteout {
			s += "w"
		}
		s += " "
	}
	return s
}

func TestLowerIndex(t *testing.T) {
	testutil.RequireRoot(t) // whiteouts are char devices
	s := fixture{lowers: [][]string{
		{"f d/a", "w d/b", "d d/c"},
		{"f d/b", "d d/c", "s d/l x"},
		{"f d/a", "f d/b", "f d/c", "f d/only"},
	}}.build(t)
	x := s.LowerIndex()
	dirs := []LowerDir{{0, "d"}, {1, "d"}, {2, "/d/"}}
	for name, want := range map[string]string{
		"a":       "0:10 2:10 ",
		"b":       "0:2w ",
		"c":       "0:4 1:4 2:10 ",
		"l":       "1:12 ",
		"only":    "2:10 ",
		"missing": "",
	} {
		got, err := x.Lookup(dirs, name)
		if err != nil {
			t.Fatal(err)
		}
		if hitsString(got) != want {
			t.Errorf("%s: hits %q, want %q", name, hitsString(got), want)
		}
	}
	d, err := x.Dir(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := x.Dir(dirs); d2 != d {
		t.Error("second Dir call rebuilt the index")
	}
	if d.Visible("b") || !d.Visible("a") || d.Len() != 5 {
		t.Errorf("Visible(b)=%v Visible(a)=%v Len=%d", d.Visible("b"), d.Visible("a"), d.Len())
	}
	// a dir missing in one layer contributes nothing
	if h, err := x.Lookup([]LowerDir{{0, "nope"}, {2, "d"}}, "a"); err != nil || hitsString(h) != "1:10 " {
		t.Errorf("missing dir: %q %v", hitsString(h), err)
	}
}

func TestLowerIndexEvicts(t *testing.T) {
	s := fixture{lowers: [][]string{{"f a/x", "f b/x", "f c/x"}}}.build(t)
	x := NewLowerIndex(s.Lowers(), 2)
	for _, d := range []string{"a", "b", "c", "a"} {
		if h, err := x.Lookup([]LowerDir{{0, d}}, "x"); err != nil || len(h) != 1 {
			t.Fatalf("%s: %v %v", d, h, err)
		}
	}
	if x.lru.Len() != 2 || len(x.m) != 2 {
		t.Errorf("cache holds %d/%d dirs, want 2", x.lru.Len(), len(x.m))
	}
}

func TestLayerIndexFile(t *testing.T) {
	testutil.RequireRoot(t)
	s := fixture{lowers: [][]string{
		{"f d/a", "w d/b", "d d/c/e", "s d/l x"},
		{"f d/b", "f d/c", "f top"},
	}}.build(t)
	var f Format
	if err := f.SetOpaque(filepath.Join(s.Lowers()[0], "d/c")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "l0.idx")
	if err := WriteIndexFile(s.Lowers()[0], file); err != nil {
		t.Fatal(err)
	}
	li, err := ReadIndexFile(file, s.Lowers()[0])
	if err != nil {
		t.Fatal(err)
	}
	if li.Dirs() != 4 { // root, d, d/c, d/c/e
		t.Errorf("index has %d dirs, want 4", li.Dirs())
	}
	// answers from the file equal answers from listing
	x, y := NewLowerIndex(s.Lowers(), 0), NewLowerIndex(s.Lowers(), 0)
	x.UseLayerIndex(0, li)
	dirs := []LowerDir{{0, "d"}, {1, "d"}}
	for _, name := range []string{"a", "b", "c", "l", "nope"} {
		a, _ := x.Lookup(dirs, name)
		b, _ := y.Lookup(dirs, name)
		if hitsString(a) != hitsString(b) {
			t.Errorf("%s: from file %q, listed %q", name, hitsString(a), hitsString(b))
		}
		for _, h := range b {
			if h.Plain {
				t.Errorf("%s: listed hit %+v is plain (only index files know)", name, h)
			}
		}
	}
	// the file knows which entries carry overlay xattrs: d/c is opaque
	for name, want := range map[string]bool{"a": true, "c": false, "l": true} {
		h, _ := x.Lookup(dirs, name)
		if len(h) == 0 || h[0].Dir != 0 || h[0].Plain != want {
			t.Errorf("%s: hits %+v, want top hit in layer 0 with Plain=%v", name, h, want)
		}
	}
	// wrong layer, corruption
	if _, err := ReadIndexFile(file, s.Lowers()[1]); !errors.Is(err, ErrIndexInvalid) {
		t.Errorf("index read for another layer: %v", err)
	}
	var buf bytes.Buffer
	if err := WriteIndex(s.Lowers()[0], &buf); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	b[len(b)/2] ^= 0xff
	if _, err := ReadIndex(bytes.NewReader(b), s.Lowers()[0]); !errors.Is(err, ErrIndexInvalid) {
		t.Errorf("corrupt index: %v", err)
	}
}

func TestWithLowerIndexFiles(t *testing.T) {
	s := fixture{lowers: [][]string{{"f d/a"}, {"f d/b"}}}.build(t)
	dir := t.TempDir()
	f0, bad := filepath.Join(dir, "l0.idx"), filepath.Join(dir, "bad.idx")
	if err := WriteIndexFile(s.Lowers()[0], f0); err != nil {
		t.Fatal(err)
	}
	if err := WriteIndexFile(s.Lowers()[0], bad); err != nil { // for the wrong layer
		t.Fatal(err)
	}
	s2, err := NewStack(s.Lowers(), WithLowerIndexFiles([]string{f0, bad}))
	if err != nil {
		t.Fatal(err)
	}
	x := s2.LowerIndex()
	if !x.LayerIndexed(0) || x.LayerIndexed(1) {
		t.Errorf("indexed layers: 0=%v 1=%v, want true, false", x.LayerIndexed(0), x.LayerIndexed(1))
	}
	for name, want := range map[string]string{"a": "0:10 ", "b": "1:10 ", "c": ""} {
		h, err := x.Lookup([]LowerDir{{0, "d"}, {1, "d"}}, name)
		if err != nil || hitsString(h) != want {
			t.Errorf("%s: %q %v, want %q", name, hitsString(h), err, want)
		}
	}
}

func TestWithSiblingIndexFiles(t *testing.T) {
	s := fixture{lowers: [][]string{{"f d/a"}, {"f d/b"}}}.build(t)
	l0 := s.Lowers()[0]
	if got, want := IndexPath(l0+"/"), l0+IndexSuffix; got != want {
		t.Errorf("IndexPath(%q) = %q, want %q", l0+"/", got, want)
	}
	if err := WriteIndexFile(l0, IndexPath(l0)); err != nil {
		t.Fatal(err)
	}
	s2, err := NewStack(s.Lowers(), WithSiblingIndexFiles())
	if err != nil {
		t.Fatal(err)
	}
	x := s2.LowerIndex()
	if !x.LayerIndexed(0) || x.LayerIndexed(1) { // layer 1 has no index: listed
		t.Errorf("indexed layers: 0=%v 1=%v, want true, false", x.LayerIndexed(0), x.LayerIndexed(1))
	}
	h, err := x.Lookup([]LowerDir{{0, "d"}, {1, "d"}}, "b")
	if err != nil || hitsString(h) != "1:10 " {
		t.Errorf("b: %q %v", hitsString(h), err)
	}
}

package overlay

import (
	"fmt"
	"io/fs"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

func TestReadDirMerge(t *testing.T) {
	testutil.RequireRoot(t)
	s := fixture{
		upper: []string{"f d/u u", "w d/gone", "f d/both up", "d d/sub"},
		lowers: [][]string{
			{"d d", "ox d", "xw d/xgone", "f d/both l0", "s d/link u", "d d/sub", "o d/sub"},
			{"f d/gone g", "f d/xgone x", "f d/deep d", "f d/sub/hidden h"},
		},
	}.build(t)
	got, err := s.ReadDir("d")
	if err != nil {
		t.Fatal(err)
	}
	want := []DirEntry{
		{Name: "both", Layer: 0, Type: 0},
		{Name: "deep", Layer: 2, Type: 0},
		{Name: "link", Layer: 1, Type: fs.ModeSymlink},
		{Name: "sub", Layer: 0, Type: fs.ModeDir},
		{Name: "u", Layer: 0, Type: 0},
	}
	strip := func(es []DirEntry) string {
		var out string
		for _, e := range es {
			out += fmt.Sprintf("%s/%d/%v ", e.Name, e.Layer, e.Type)
		}
		return out
	}
	if strip(got) != strip(want) {
		t.Errorf("ReadDir(d)\n got  %s\n want %s", strip(got), strip(want))
	}
	// The lower sub is opaque: its lower "hidden" stays hidden.
	if sub, err := s.ReadDir("d/sub"); err != nil || len(sub) != 0 {
		t.Errorf("ReadDir(d/sub) = %v, %v; want empty", sub, err)
	}
	// Stable across calls.
	again, _ := s.ReadDir("d")
	if strip(again) != strip(got) {
		t.Error("ReadDir not stable")
	}
}

package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"golang.org/x/sys/unix"
)

// randomFixture builds layers over a small namespace so that names collide
// across layers: files, dirs, symlinks, char whiteouts, opaque dirs, and in
// lower layers opaque="x" dirs holding xattr whiteouts.
func randomFixture(r *rand.Rand) fixture {
	names := []string{"a", "b", "c"}
	// layer adds ops for one layer; xw: the dir at prefix is a lower dir
	// marked opaque="x", where xattr whiteouts are valid.
	var layer func(lower bool, depth int, prefix string, xw bool, ops *[]string)
	layer = func(lower bool, depth int, prefix string, xw bool, ops *[]string) {
		for _, n := range names {
			p := prefix + n
			switch k := r.IntN(11); {
			case k < 3: // absent
			case k < 5:
				*ops = append(*ops, fmt.Sprintf("f %s %s-%d", p, p, r.IntN(100)))
			case k < 6:
				*ops = append(*ops, "s "+p+" target")
			case k < 7:
				*ops = append(*ops, "w "+p)
			case k < 8:
				if xw {
					*ops = append(*ops, "xw "+p)
				}
			default:
				*ops = append(*ops, "d "+p)
				childX := false
				switch r.IntN(4) {
				case 0:
					*ops = append(*ops, "o "+p)
				case 1:
					if lower {
						*ops = append(*ops, "ox "+p)
						childX = true
					}
				}
				if depth < 2 {
					layer(lower, depth+1, p+"/", childX, ops)
				}
			}
		}
	}
	var fx fixture
	fx.upper = []string{}
	layer(false, 0, "", false, &fx.upper)
	for range 1 + r.IntN(3) {
		var ops []string
		layer(true, 0, "", false, &ops)
		fx.lowers = append(fx.lowers, ops)
	}
	return fx
}

// TestRandomAgainstKernel builds random stacks, applies random CopyUp and
// Remove operations, and after each compares strata's union with a fresh
// kernel overlayfs mount of the same layers.
func TestRandomAgainstKernel(t *testing.T) {
	testutil.RequireOverlay(t)
	seeds := 30
	if testing.Short() {
		seeds = 5
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(seed), 42))
			fx := randomFixture(r)
			s := fx.build(t)
			compareWithKernel(t, s)
			for step := range 8 {
				tree := unionTree(t, s)
				if len(tree) == 0 {
					return
				}
				paths := make([]string, 0, len(tree))
				for p := range tree {
					paths = append(paths, p)
				}
				sort.Strings(paths)
				p := paths[r.IntN(len(paths))]
				op := "copyup"
				var err error
				if r.IntN(2) == 0 {
					op = "remove"
					err = s.Remove(p)
					if err == nil {
						if _, lerr := s.Lookup(p); !errors.Is(lerr, fs.ErrNotExist) {
							t.Errorf("step %d: %s still there after Remove: %v", step, p, lerr)
						}
					}
				} else {
					var e *Entry
					e, err = s.CopyUp(p)
					if err == nil && e.Layer != 0 {
						t.Errorf("step %d: CopyUp(%s) served from layer %d", step, p, e.Layer)
					}
				}
				if err != nil && !errors.Is(err, unix.ENOTEMPTY) {
					t.Fatalf("step %d: %s %s: %v\nfixture %+v", step, op, p, err, fx)
				}
				if t.Failed() {
					t.Fatalf("step %d: %s %s\nfixture %+v", step, op, p, fx)
				}
				compareWithKernel(t, s)
				if t.Failed() {
					t.Fatalf("after step %d: %s %s\nfixture %+v", step, op, p, fx)
				}
			}
			leftovers(t, s)
		})
	}
}

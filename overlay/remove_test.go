package overlay

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestRemove(t *testing.T) {
	testutil.RequireOverlay(t)
	cases := []struct {
		name    string
		fx      fixture
		remove  string
		err     error  // expected error, nil for success
		upper   string // what the upper holds at the name afterwards: "whiteout", "none"
		checkFn func(t *testing.T, s *Stack)
	}{
		{name: "lower file", fx: fixture{upper: []string{}, lowers: [][]string{{"f a/b/f x", "f a/b/g y"}}},
			remove: "a/b/f", upper: "whiteout"},
		{name: "upper-only file", fx: fixture{upper: []string{"f u x"}, lowers: [][]string{{"f l y"}}},
			remove: "u", upper: "none"},
		{name: "upper file over lower", fx: fixture{upper: []string{"f a u"}, lowers: [][]string{{"f a l"}}},
			remove: "a", upper: "whiteout"},
		{name: "upper file over whiteout in lower", fx: fixture{upper: []string{"f a u"}, lowers: [][]string{{"w a"}, {"f a l"}}},
			remove: "a", upper: "none"},
		{name: "non-empty lower dir", fx: fixture{upper: []string{}, lowers: [][]string{{"f d/x x"}}},
			remove: "d", err: unix.ENOTEMPTY},
		{name: "non-empty merged dir", fx: fixture{upper: []string{"d d"}, lowers: [][]string{{"f d/x x"}}},
			remove: "d", err: unix.ENOTEMPTY},
		{name: "lower dir emptied by whiteouts", fx: fixture{upper: []string{"w d/x", "w d/y"}, lowers: [][]string{{"f d/x x", "f d/y y"}}},
			remove: "d", upper: "whiteout"},
		{name: "upper-only dir holding whiteouts", fx: fixture{upper: []string{"w d/x"}, lowers: [][]string{{"f other o"}}},
			remove: "d", upper: "none"},
		{name: "opaque upper dir over lower dir", fx: fixture{upper: []string{"d d", "o d"}, lowers: [][]string{{"f d/x x"}}},
			remove: "d", upper: "whiteout"},
		{name: "empty lower dir", fx: fixture{upper: []string{}, lowers: [][]string{{"d e"}}},
			remove: "e", upper: "whiteout"},
		{name: "lower symlink", fx: fixture{upper: []string{}, lowers: [][]string{{"s l target"}}},
			remove: "l", upper: "whiteout"},
		{name: "missing", fx: fixture{upper: []string{}, lowers: [][]string{{"w a"}, {"f a a"}}},
			remove: "a", err: fs.ErrNotExist},
		{name: "root", fx: fixture{upper: []string{}, lowers: [][]string{{"f a a"}}},
			remove: ".", err: unix.EBUSY},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.fx.build(t)
			err := s.Remove(tc.remove)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Remove(%q) = %v, want %v", tc.remove, err, tc.err)
				}
				compareWithKernel(t, s)
				return
			}
			if err != nil {
				t.Fatalf("Remove(%q): %v", tc.remove, err)
			}
			if _, err := s.Lookup(tc.remove); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Lookup after Remove: %v", err)
			}
			var st unix.Stat_t
			err = unix.Lstat(filepath.Join(s.Upper(), tc.remove), &st)
			switch tc.upper {
			case "whiteout":
				if err != nil || !IsWhiteoutStat(&st) {
					t.Errorf("upper %s: want a whiteout, got mode %o err %v", tc.remove, st.Mode, err)
				}
			case "none":
				if err != unix.ENOENT {
					t.Errorf("upper %s: want nothing, got mode %o err %v", tc.remove, st.Mode, err)
				}
			}
			leftovers(t, s)
			compareWithKernel(t, s)
		})
	}
}

package overlay

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mkLayer builds a layer dir from ops, one per string, fields separated by
// spaces (paths are created with their parents):
//
//	d PATH            directory
//	f PATH [DATA]     regular file
//	s PATH TARGET     symlink
//	w PATH            kernel whiteout (char 0/0)
//	xw PATH           xattr whiteout (empty file + overlay whiteout xattr)
//	o PATH            opaque="y"        ox PATH   opaque="x"
//	r PATH VALUE      redirect xattr    m PATH    metacopy xattr
//	t PATH SIZE       truncate          c PATH MODE  chmod (octal)
//	X NAME PATH VALUE raw xattr NAME (in any namespace)
func mkLayer(t testing.TB, dir string, f Format, ops ...string) {
	t.Helper()
	for _, op := range ops {
		a := strings.Fields(op)
		p := filepath.Join(dir, a[1])
		if a[0] != "X" && a[1] != "." {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		switch a[0] {
		case "d":
			err = os.MkdirAll(p, 0o755)
		case "f":
			data := ""
			if len(a) > 2 {
				data = a[2]
			}
			err = os.WriteFile(p, []byte(data), 0o644)
		case "s":
			err = os.Symlink(a[2], p)
		case "w":
			err = MakeWhiteout(filepath.Dir(p), filepath.Base(p))
		case "xw":
			if err = os.WriteFile(p, nil, 0o644); err == nil {
				err = unix.Lsetxattr(p, f.Xattr(XattrWhiteout), nil, 0)
			}
		case "o":
			err = unix.Lsetxattr(p, f.Xattr(XattrOpaque), []byte("y"), 0)
		case "ox":
			err = unix.Lsetxattr(p, f.Xattr(XattrOpaque), []byte("x"), 0)
		case "r":
			err = unix.Lsetxattr(p, f.Xattr(XattrRedirect), []byte(a[2]), 0)
		case "m":
			err = unix.Lsetxattr(p, f.Xattr(XattrMetacopy), nil, 0)
		case "t":
			n, _ := strconv.Atoi(a[2])
			err = os.Truncate(p, int64(n))
		case "c":
			n, _ := strconv.ParseUint(a[2], 8, 32)
			err = os.Chmod(p, fs.FileMode(n))
		case "X":
			err = unix.Lsetxattr(filepath.Join(dir, a[2]), a[1], []byte(a[3]), 0)
		default:
			t.Fatalf("mkLayer: bad op %q", op)
		}
		if err != nil {
			t.Fatalf("mkLayer %q: %v", op, err)
		}
	}
}

// fixture is a stack spec: upper ops (nil: read-only stack) and lower
// layers' ops, topmost first.
type fixture struct {
	upper  []string
	lowers [][]string
	user   bool // WithUserXattr
}

// build creates the layers in t.TempDir and returns the stack.
func (fx fixture) build(t testing.TB, opts ...StackOption) *Stack {
	t.Helper()
	root := t.TempDir()
	var f Format
	if fx.user {
		f.UserXattr = true
		opts = append(opts, WithUserXattr())
	}
	var lowers []string
	for i, ops := range fx.lowers {
		d := filepath.Join(root, "l"+itoa(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		mkLayer(t, d, f, ops...)
		lowers = append(lowers, d)
	}
	if fx.upper != nil {
		u, w := filepath.Join(root, "upper"), filepath.Join(root, "work")
		for _, d := range []string{u, w} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		mkLayer(t, u, f, fx.upper...)
		opts = append(opts, WithUpper(u, w))
	}
	s, err := NewStack(lowers, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func itoa(i int) string { return strconv.Itoa(i) }

// describe renders one object for tree comparison: type, perms and data.
func describe(t testing.TB, meta, data string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(meta, &st); err != nil {
		t.Fatal(err)
	}
	m := statMode(st.Mode) | fs.FileMode(st.Mode&0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if st.Size > 1<<20 {
			return m.String() + " size " + strconv.FormatInt(st.Size, 10)
		}
		b, err := os.ReadFile(data)
		if err != nil {
			t.Fatal(err)
		}
		return m.String() + " " + string(b)
	case unix.S_IFLNK:
		l, err := os.Readlink(meta)
		if err != nil {
			t.Fatal(err)
		}
		return m.String() + " -> " + l
	case unix.S_IFCHR, unix.S_IFBLK:
		return m.String() + " dev " + itoa(int(unix.Major(st.Rdev))) + "," + itoa(int(unix.Minor(st.Rdev)))
	}
	return m.String()
}

// unionTree lists the union of s through ReadDir and Lookup, checking
// that both agree and that listings are sorted.
func unionTree(t testing.TB, s *Stack) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := s.ReadDir(dir)
		if err != nil {
			t.Fatalf("ReadDir(%q): %v", dir, err)
		}
		if !sort.SliceIsSorted(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name }) {
			t.Errorf("ReadDir(%q) not sorted", dir)
		}
		for _, de := range ents {
			p := unionJoin(dir, de.Name)
			e, err := s.Lookup(p)
			if err != nil {
				t.Fatalf("ReadDir(%q) lists %q but Lookup: %v", dir, de.Name, err)
			}
			if e.Layer != de.Layer || statMode(e.Stat.Mode) != de.Type {
				t.Errorf("%q: ReadDir says layer %d type %v, Lookup layer %d type %v", p, de.Layer, de.Type, e.Layer, statMode(e.Stat.Mode))
			}
			out[p] = describe(t, e.RealPath, e.DataPath)
			if e.Dir != nil {
				walk(p)
			}
		}
	}
	walk(".")
	return out
}

// mountTree lists a real directory tree (e.g. a kernel overlay mount).
func mountTree(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err == unix.ENOENT {
			// Kernel quirk: readdir of a dir only one layer provides is
			// passed through, whiteouts included; lookup hides them.
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = describe(t, p, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(t testing.TB, got, want map[string]string) {
	t.Helper()
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			b.WriteString("  missing " + k + ": " + w + "\n")
		case !wok:
			b.WriteString("  extra   " + k + ": " + g + "\n")
		case g != w:
			b.WriteString("  differ  " + k + ": got " + g + ", want " + w + "\n")
		}
	}
	if b.Len() > 0 {
		t.Errorf("trees differ:\n%s", b.String())
	}
}

package overlay

import (
	"os"
	"path/filepath"
	"testing"
)

// layerDirs builds layers (top first) from "path" (dir if it ends in /),
// "path=content", "!path" (kernel whiteout) and "path/+" (opaque dir).
func layerDirs(t *testing.T, specs ...[]string) []string {
	t.Helper()
	var dirs []string
	for i, spec := range specs {
		d := filepath.Join(t.TempDir(), "l"+string(rune('0'+i)))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, e := range spec {
			switch {
			case e[0] == '!':
				p := filepath.Join(d, e[1:])
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := MakeWhiteout(filepath.Dir(p), filepath.Base(p)); err != nil {
					t.Skipf("cannot make whiteouts here: %v", err)
				}
			case e[len(e)-1] == '+':
				p := filepath.Join(d, e[:len(e)-2])
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := (Format{}).SetOpaque(p); err != nil {
					t.Skipf("cannot set trusted xattrs here: %v", err)
				}
			case e[len(e)-1] == '/':
				if err := os.MkdirAll(filepath.Join(d, e), 0o755); err != nil {
					t.Fatal(err)
				}
			default:
				name, content, _ := cut(e, "=")
				p := filepath.Join(d, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		dirs = append(dirs, d)
	}
	return dirs
}

func cut(s, sep string) (string, string, bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

func TestResolve(t *testing.T) {
	layers := layerDirs(t,
		[]string{"cfg/+", "cfg/c=3", "etc/host=h"},
		[]string{"etc/motd=2", "!var/big", "cfg/b=2"},
		[]string{"etc/motd=1", "var/big=x", "cfg/a=1", "f=file"},
	)
	f := Format{}
	type want struct {
		found  bool
		served int
		roles  string
	}
	for p, w := range map[string]want{
		"/etc/motd":  {true, 1, "absent serves hidden"},
		"/var/big":   {false, -1, "absent deletes hidden"},
		"/cfg":       {true, 0, "serves hidden hidden"},
		"/cfg/a":     {false, -1, "absent absent hidden"},
		"/cfg/c":     {true, 0, "serves absent absent"},
		"/etc":       {true, 0, "serves merged merged"},
		"/f":         {true, 2, "absent absent serves"},
		"/f/x":       {false, -1, "absent absent absent"},
		"/":          {true, 0, "serves merged merged"},
		"/none/here": {false, -1, "absent absent absent"},
	} {
		res, err := f.Resolve(layers, p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		roles := ""
		for i, st := range res.Steps {
			if i > 0 {
				roles += " "
			}
			roles += string(st.Role)
		}
		if res.Found != w.found || res.Served != w.served || roles != w.roles {
			t.Errorf("%s: found %v served %d roles %q (why %q), want %v %d %q", p, res.Found, res.Served, roles, res.Why, w.found, w.served, w.roles)
		}
	}
	// Stack.Explain (Lookup's verdict) agrees with the walk.
	st, err := NewStack(layers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/motd", "/var/big", "/cfg", "/cfg/a", "/cfg/c", "/etc", "/f", "/f/x", "/", "/none/here"} {
		a, err := f.Resolve(layers, p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := st.Explain(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if a.Found != b.Found || a.Served != b.Served || (b.Found && b.DataLayer != b.Served) {
			t.Errorf("%s: walk says found %v layer %d, Lookup says %v layer %d (data %d)", p, a.Found, a.Served, b.Found, b.Served, b.DataLayer)
		}
	}
	for _, p := range []string{"../x", "/etc/../f"} { // ".." is refused, not cleaned
		if _, err := f.Resolve(layers, p); err == nil {
			t.Fatalf("%s resolved", p)
		}
	}
}

func TestWalkLayer(t *testing.T) {
	layers := layerDirs(t, []string{"cfg/+", "cfg/c=3", "!gone", "d/"})
	var got []string
	err := Format{}.WalkLayer(layers[0], "/", func(e LayerEntry) error {
		got = append(got, e.Kind()+" "+e.Path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "[opaque dir /cfg file /cfg/c dir /d whiteout /gone]"
	if s := fmtSlice(got); s != want {
		t.Fatalf("got %s, want %s", s, want)
	}
}

func fmtSlice(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}

package reliability

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/snapshot"
)

// stressEnv turns on the heavy cases.
const stressEnv = "STRATA_STRESS"

func stress() bool { return os.Getenv(stressEnv) == "1" }

// envInt reads a positive integer from the environment, or def.
func envInt(t testing.TB, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// sandbox is a temp dir holding a store at store/ and sentinel dirs next
// to it (sentinel/etc/passwd, sentinel/tmp) that no import may touch.
type sandbox struct {
	dir      string
	root     string // the store root
	sentinel string
	before   fstree.Tree
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	dir := t.TempDir()
	sb := &sandbox{dir: dir, root: filepath.Join(dir, "store"), sentinel: filepath.Join(dir, "sentinel")}
	for _, d := range []string{"etc", "tmp", "data"} {
		if err := os.MkdirAll(filepath.Join(sb.sentinel, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sb.sentinel, "etc", "passwd"), []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sb.sentinel, "data", "secret"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	sb.before = sb.outside(t)
	return sb
}

// outside snapshots everything in the sandbox except the store.
func (sb *sandbox) outside(t testing.TB) fstree.Tree {
	t.Helper()
	tr, err := fstree.Snapshot(sb.dir, fstree.WithIgnore(func(p string) bool { return p == "store" }))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// checkUntouched fails t if anything outside the store changed.
func (sb *sandbox) checkUntouched(t testing.TB) {
	t.Helper()
	if d := fstree.Diff(sb.before, sb.outside(t), fstree.WithoutRoot()); len(d) > 0 {
		t.Errorf("outside the store changed:\n%v", d)
	}
}

// open opens the sandbox's store; t.Cleanup closes it (if still open),
// reopens it and runs Check.
func (sb *sandbox) open(t testing.TB) *snapshot.Store {
	t.Helper()
	s, err := snapshot.Open(sb.root)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		checkStore(t, sb.root)
	})
	return s
}

// checkStore opens the store at root, runs Check and closes it.
func checkStore(t testing.TB, root string) {
	t.Helper()
	s, err := snapshot.Open(root)
	if err != nil {
		t.Errorf("reopen: %v", err)
		return
	}
	defer s.Close()
	if err := s.Check(context.Background()); err != nil {
		t.Errorf("check: %v", err)
	}
}

// keys lists the snapshots of s.
func keys(t testing.TB, s *snapshot.Store) []string {
	t.Helper()
	var ks []string
	if err := s.Walk(context.Background(), func(_ context.Context, i snapshot.Info) error {
		ks = append(ks, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ks
}

// stagingEmpty fails t unless the store's staging dir is empty.
func stagingEmpty(t testing.TB, root string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "staging"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Errorf("staging not empty: %v", ents)
	}
}

// hdr is one tar entry; body is written as its content (and Size is set
// from it unless size is non-zero).
type hdr struct {
	tar.Header
	body string
}

func file(name, body string) hdr {
	return hdr{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, body}
}
func dir(name string) hdr { return hdr{tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}, ""} }
func symlink(name, target string) hdr {
	return hdr{tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, ""}
}
func hardlink(name, target string) hdr {
	return hdr{tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, Mode: 0o644}, ""}
}
func withXattrs(h hdr, kv ...string) hdr {
	h.PAXRecords = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
	}
	return h
}

// mkTar writes hs as a PAX tar.
func mkTar(t testing.TB, hs ...hdr) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		hh := h.Header
		if hh.Size == 0 {
			hh.Size = int64(len(h.body))
		}
		if hh.Format == tar.FormatUnknown {
			hh.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&hh); err != nil {
			t.Fatalf("tar header %q: %v", hh.Name, err)
		}
		if _, err := tw.Write([]byte(h.body)); err != nil && !errors.Is(err, tar.ErrWriteTooLong) {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil && !errors.Is(err, tar.ErrWriteTooLong) && !short(hs) {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// short reports whether an entry declares more data than it carries (the
// tar is then cut short on purpose).
func short(hs []hdr) bool {
	for _, h := range hs {
		if h.Size > int64(len(h.body)) {
			return true
		}
	}
	return false
}

func dirName(i int) string { return "e" + strconv.Itoa(i) }

func maxu(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func sleepMs(n int) { time.Sleep(time.Duration(n) * time.Millisecond) }

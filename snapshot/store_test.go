package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
)

func TestSemantics(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "base", "", map[string]string{"a": "1"})
	if _, err := s.Prepare(ctx, "active", "base"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, "view", "base"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"prepare empty key", func() error { _, err := s.Prepare(ctx, "", ""); return err }, ErrInvalidArgument},
		{"view empty key", func() error { _, err := s.View(ctx, "", "base"); return err }, ErrInvalidArgument},
		{"prepare existing key", func() error { _, err := s.Prepare(ctx, "active", ""); return err }, ErrAlreadyExists},
		{"view existing key", func() error { _, err := s.View(ctx, "active", "base"); return err }, ErrAlreadyExists},
		{"prepare key equal to a name", func() error { _, err := s.Prepare(ctx, "base", ""); return err }, ErrAlreadyExists},
		{"prepare missing parent", func() error { _, err := s.Prepare(ctx, "x", "nope"); return err }, ErrNotFound},
		{"prepare on active parent", func() error { _, err := s.Prepare(ctx, "x", "active"); return err }, ErrInvalidArgument},
		{"view on view parent", func() error { _, err := s.View(ctx, "x", "view"); return err }, ErrInvalidArgument},
		{"commit view", func() error { return s.Commit(ctx, "c", "view") }, ErrFailedPrecondition},
		{"commit committed", func() error { return s.Commit(ctx, "c", "base") }, ErrFailedPrecondition},
		{"commit missing", func() error { return s.Commit(ctx, "c", "nope") }, ErrNotFound},
		{"commit onto existing name", func() error { return s.Commit(ctx, "base", "active") }, ErrAlreadyExists},
		{"commit empty name", func() error { return s.Commit(ctx, "", "active") }, ErrInvalidArgument},
		{"remove missing", func() error { return s.Remove(ctx, "nope") }, ErrNotFound},
		{"remove parent with children", func() error { return s.Remove(ctx, "base") }, ErrFailedPrecondition},
		{"stat missing", func() error { _, err := s.Stat(ctx, "nope"); return err }, ErrNotFound},
		{"usage missing", func() error { _, err := s.Usage(ctx, "nope"); return err }, ErrNotFound},
		{"mounts missing", func() error { _, err := s.Mounts(ctx, "nope"); return err }, ErrNotFound},
		{"update missing", func() error { _, err := s.Update(ctx, Info{Name: "nope"}); return err }, ErrNotFound},
		{"update parent", func() error { _, err := s.Update(ctx, Info{Name: "active", Parent: "x"}, "parent"); return err }, ErrInvalidArgument},
		{"update empty name", func() error { _, err := s.Update(ctx, Info{}); return err }, ErrInvalidArgument},
		{"walk bad filter", func() error {
			return s.Walk(ctx, func(context.Context, Info) error { return nil }, "kind==")
		}, ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.name, tc.op(), tc.want) })
	}

	// Failed operations changed nothing.
	var names []string
	if err := s.Walk(ctx, func(_ context.Context, i Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if want := []string{"active", "base", "view"}; !slices.Equal(names, want) {
		t.Fatalf("after failed operations: snapshots %v, want %v", names, want)
	}
}

func TestErrorNamesOperationKeyAndParent(t *testing.T) {
	s := newTestStore(t)
	_, err := s.Prepare(context.Background(), "c1", "sha256:abc")
	wantErr(t, "prepare", err, ErrNotFound)
	if got, want := err.Error(), `prepare "c1": parent "sha256:abc": not found`; got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
}

func TestKindsAndInfo(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	if _, err := s.Prepare(ctx, "a", "", WithLabels(map[string]string{"l": "1"})); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != KindActive || info.Name != "a" || info.Parent != "" || info.Labels["l"] != "1" || !info.Created.Equal(info.Updated) {
		t.Fatalf("stat active: %+v", info)
	}
	// Commit replaces labels, keeps the id's dir.
	if err := s.Commit(ctx, "c", "a", WithLabels(map[string]string{"m": "2"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat of the committed key: %v, want not found", err)
	}
	info, err = s.Stat(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != KindCommitted || len(info.Labels) != 1 || info.Labels["m"] != "2" {
		t.Fatalf("stat committed: %+v", info)
	}
	// Update by fieldpath.
	info.Labels = map[string]string{"n": "3"}
	info, err = s.Update(ctx, info, "labels.n", "labels.m")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Labels) != 1 || info.Labels["n"] != "3" || !info.Updated.After(info.Created) {
		t.Fatalf("update: %+v", info)
	}
	for _, k := range []Kind{KindView, KindActive, KindCommitted, KindUnknown} {
		if ParseKind(k.String()) != k {
			t.Fatalf("ParseKind(%q) != %v", k.String(), k)
		}
	}
}

func TestWalkFilters(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "p", "", nil)
	for _, op := range []error{
		func() error { _, err := s.Prepare(ctx, "a", "p", WithLabels(map[string]string{"l": "x"})); return err }(),
		func() error { _, err := s.View(ctx, "v", "p"); return err }(),
		func() error { _, err := s.Prepare(ctx, "b", "", WithLabels(map[string]string{"a.b": "y"})); return err }(),
	} {
		if op != nil {
			t.Fatal(op)
		}
	}
	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"a", "b", "p", "v"}},
		{[]string{"kind==active"}, []string{"a", "b"}},
		{[]string{"kind==committed"}, []string{"p"}},
		{[]string{"parent==p"}, []string{"a", "v"}},
		{[]string{"name==v", "name==b"}, []string{"b", "v"}},
		{[]string{"labels.l"}, []string{"a"}},
		{[]string{`labels."a.b"==y`}, []string{"b"}},
		{[]string{"kind==active,parent!=\"\""}, []string{"a"}},
		{[]string{"name~=^[ab]$"}, []string{"a", "b"}},
	} {
		var got []string
		if err := s.Walk(ctx, func(_ context.Context, i Info) error { got = append(got, i.Name); return nil }, tc.filters...); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("walk %q: got %v, want %v", tc.filters, got, tc.want)
		}
	}
	// Walk stops with the callback's error.
	stop := errors.New("stop")
	if err := s.Walk(ctx, func(context.Context, Info) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("walk: %v, want stop", err)
	}
}

func TestRemoveRefusesParentWithChildren(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "l1", "", nil)
	mustCommitted(t, s, "l2", "l1", nil)
	if _, err := s.View(ctx, "v", "l2"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "remove l1", s.Remove(ctx, "l1"), ErrFailedPrecondition)
	wantErr(t, "remove l2", s.Remove(ctx, "l2"), ErrFailedPrecondition)
	wantErr(t, "remove v", s.Remove(ctx, "v"), nil)
	wantErr(t, "remove l2", s.Remove(ctx, "l2"), nil)
	wantErr(t, "remove l1", s.Remove(ctx, "l1"), nil)
}

func TestCommitKeepsChildLinks(t *testing.T) {
	// A committed child keeps its parent from being removed, under its new name.
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "p", "", nil)
	mustCommitted(t, s, "c", "p", nil)
	wantErr(t, "remove p", s.Remove(ctx, "p"), ErrFailedPrecondition)
	wantErr(t, "remove c", s.Remove(ctx, "c"), nil)
	wantErr(t, "remove p", s.Remove(ctx, "p"), nil)
}

func TestRebaseCommit(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "base", "", map[string]string{"a": "1"})
	mustCommitted(t, s, "other", "", nil)
	if _, err := s.View(ctx, "ro", "base"); err != nil {
		t.Fatal(err)
	}

	// An active snapshot without parent is rebased onto base at commit.
	if _, err := s.Prepare(ctx, "layer", ""); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "rebase onto a missing parent", s.Commit(ctx, "top", "layer", WithParent("nope")), ErrNotFound)
	wantErr(t, "rebase onto a view", s.Commit(ctx, "top", "layer", WithParent("ro")), ErrInvalidArgument)
	wantErr(t, "rebase", s.Commit(ctx, "top", "layer", WithParent("base")), nil)
	info, err := s.Stat(ctx, "top")
	if err != nil {
		t.Fatal(err)
	}
	if info.Parent != "base" {
		t.Fatalf("parent after rebase: %q, want base", info.Parent)
	}
	m, err := s.Mounts(ctx, "top")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[0].Type != "overlay" || !slices.Contains(m[0].Options, "lowerdir="+s.fsDir(mustID(t, s, "top"))+":"+s.fsDir(mustID(t, s, "base"))) {
		t.Fatalf("mounts after rebase: %+v", m)
	}
	wantErr(t, "remove base", s.Remove(ctx, "base"), ErrFailedPrecondition)

	// A snapshot with a parent cannot change it; the same parent is fine.
	if _, err := s.Prepare(ctx, "child", "base"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "change parent", s.Commit(ctx, "c2", "child", WithParent("other")), ErrInvalidArgument)
	wantErr(t, "same parent", s.Commit(ctx, "c2", "child", WithParent("base")), nil)
}

func mustID(t *testing.T, s *Store, key string) uint64 {
	t.Helper()
	var id uint64
	if err := s.view(func(b buckets) error {
		r, err := b.get(key)
		if err == nil {
			id = r.ID
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMountsShapes(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "l1", "", nil)
	mustCommitted(t, s, "l2", "l1", nil)
	l1, l2 := s.fsDir(mustID(t, s, "l1")), s.fsDir(mustID(t, s, "l2"))
	format := s.OverlayOptions()
	if !slices.Contains(format, "redirect_dir=on") {
		t.Fatalf("format options %v lack redirect_dir=on", format)
	}

	check := func(what string, got []Mount, want Mount) {
		t.Helper()
		if len(got) != 1 || got[0].Type != want.Type || got[0].Source != want.Source || !slices.Equal(got[0].Options, want.Options) {
			t.Errorf("%s: mounts %+v, want %+v", what, got, want)
		}
	}
	m, _ := s.Prepare(ctx, "a0", "")
	check("active without parent", m, Mount{"bind", s.fsDir(mustID(t, s, "a0")), []string{"rw", "rbind"}})
	m, _ = s.View(ctx, "v0", "")
	check("empty view", m, Mount{"bind", s.fsDir(mustID(t, s, "v0")), []string{"ro", "rbind"}})
	m, _ = s.View(ctx, "v1", "l1")
	check("view of one layer", m, Mount{"bind", l1, []string{"ro", "rbind"}})
	m, _ = s.View(ctx, "v2", "l2")
	check("view of two layers", m, Mount{"overlay", "overlay", append(append([]string{"ro"}, format...), "lowerdir="+l2+":"+l1)})
	m, _ = s.Prepare(ctx, "a2", "l2")
	id := mustID(t, s, "a2")
	check("active on two layers", m, Mount{"overlay", "overlay", append(slices.Clone(format),
		"workdir="+s.workDir(id), "upperdir="+s.fsDir(id), "lowerdir="+l2+":"+l1)})
	m2, err := s.Mounts(ctx, "a2")
	if err != nil {
		t.Fatal(err)
	}
	check("Mounts of active", m2, m[0])
	m, _ = s.Mounts(ctx, "l1")
	check("committed base", m, Mount{"bind", l1, []string{"ro", "rbind"}})
	for _, mm := range []Mount{m[0]} {
		if !filepath.IsAbs(mm.Source) {
			t.Errorf("source %q is not absolute", mm.Source)
		}
	}
}

func TestParseBackend(t *testing.T) {
	if b, err := ParseBackend("fuse"); err != nil || b != BackendFUSE {
		t.Fatalf("ParseBackend(fuse) = %v, %v", b, err)
	}
	_, err := ParseBackend("zfs")
	wantErr(t, "ParseBackend(zfs)", err, ErrInvalidArgument)
}

func TestCleanupAfterRemove(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "l1", "", map[string]string{"f": "data"})
	id := mustID(t, s, "l1")
	if err := s.Remove(ctx, "l1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.snapDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir of removed snapshot: %v, want gone", err)
	}
	// Simulate a crash between the metadata commit and the dir removal,
	// and a crash during a Prepare.
	if err := os.MkdirAll(filepath.Join(s.snapDir(id), "fs", "leftover"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Root(), stagingDir, "new-123", "fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustCommitted(t, s, "l2", "", nil)
	if err := os.MkdirAll(filepath.Join(s.workDir(mustID(t, s, "l2")), "work"), 0o755); err != nil {
		t.Fatal(err) // a commit that crashed before removing the work dir
	}
	wantErr(t, "check with orphans", s.Check(ctx), ErrInconsistent)
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "check after cleanup", s.Check(ctx), nil)
}

func TestCheckFindsProblems(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "p", "", nil)
	if _, err := s.Prepare(ctx, "a", "p"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "check", s.Check(ctx), nil)

	// Dangling parent and a missing work dir, written behind the store's back.
	id := mustID(t, s, "a")
	if err := s.update(func(b buckets) error {
		r, err := b.get("a")
		if err != nil {
			return err
		}
		r.Parent = "gone"
		if err := b.removeChild(r.Chain[0], r.ID); err != nil {
			return err
		}
		return b.put("a", r)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(s.workDir(id)); err != nil {
		t.Fatal(err)
	}
	err := s.Check(ctx)
	wantErr(t, "check", err, ErrInconsistent)
	for _, want := range []string{`parent "gone" does not exist`, "work dir", "missing from the children index"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check report lacks %q:\n%v", want, err)
		}
	}
	// Repair so that the final check passes.
	if err := s.update(func(b buckets) error {
		r, _ := b.get("a")
		r.Parent = "p"
		if err := b.addChild(r.Chain[0], r.ID); err != nil {
			return err
		}
		return b.put("a", r)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.workDir(id), 0o711); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFindsLeakedMount(t *testing.T) {
	testutil.RequireRoot(t)
	s := newTestStore(t)
	ctx := context.Background()
	m, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(s.Root(), "staging-mnt")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(target) })
	if err := bindMount(m[0].Source, target); err != nil {
		t.Fatal(err)
	}
	unmounted := false
	t.Cleanup(func() {
		if !unmounted {
			unmount(target)
		}
	})
	err = s.Check(ctx)
	wantErr(t, "check", err, ErrInconsistent)
	if !strings.Contains(err.Error(), "leaked mount at "+target) {
		t.Fatalf("check report lacks the leaked mount:\n%v", err)
	}
	if err := unmount(target); err != nil {
		t.Fatal(err)
	}
	unmounted = true
	if err := os.Remove(target); err != nil {
		t.Fatal(err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	s := newTestStore(t)
	_, err := Open(s.Root())
	wantErr(t, "second open in this process", err, ErrLocked)
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("error does not name the owner: %v", err)
	}

	// A second process fails fast too and names us.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOpen$", "-test.v")
	cmd.Env = append(os.Environ(), "STRATA_TEST_OPEN_ROOT="+s.Root())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "LOCKED: ") || !strings.Contains(string(out), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("helper process output does not report the lock and its owner:\n%s", out)
	}
}

// TestHelperOpen is run by TestSecondOpenFailsFast in a child process.
func TestHelperOpen(t *testing.T) {
	root := os.Getenv("STRATA_TEST_OPEN_ROOT")
	if root == "" {
		t.Skip("helper for TestSecondOpenFailsFast")
	}
	s, err := Open(root)
	if err == nil {
		s.Close()
		t.Fatal("second process opened a locked store")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("open: %v, want ErrLocked", err)
	}
	fmt.Println("LOCKED:", err)
}

func TestNewerFormatRefused(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setFormat := func(v string) {
		db, err := bolt.Open(filepath.Join(root, metadataFile), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRoot).Bucket(bucketMeta).Put(metaFormat, []byte(v))
		}); err != nil {
			t.Fatal(err)
		}
	}
	setFormat(strconv.Itoa(FormatVersion + 1))
	_, err = Open(root)
	wantErr(t, "open newer format", err, ErrUnsupportedFormat)
	if _, err := os.Stat(filepath.Join(root, ownerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused open left an owner file: %v", err)
	}
	setFormat(strconv.Itoa(FormatVersion))
	s, err = Open(root)
	if err != nil {
		t.Fatal(err)
	}
	checkAfterReopen(t, s)
}

func TestClosedStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkAfterReopen(t, s) })
	wantErr(t, "close", s.Close(), nil)
	wantErr(t, "close twice", s.Close(), nil)
	_, err = s.Prepare(context.Background(), "a", "")
	wantErr(t, "prepare after close", err, ErrClosed)
	// Nothing may be left in staging by the refused Prepare.
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), stagingDir)); len(ents) != 0 {
		t.Fatalf("staging not empty: %v", ents)
	}
}

func TestUsage(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	dir, _ := s.upperDir("a")
	u0, err := s.Usage(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if u0.Inodes != 1 {
		t.Fatalf("empty snapshot: %d inodes, want 1", u0.Inodes)
	}
	data := make([]byte, 64<<10)
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := os.Link(filepath.Join(dir, "f"), filepath.Join(dir, fmt.Sprintf("link%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i))
		if err := os.MkdirAll(filepath.Join(sub, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "x", "g"), []byte("g"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u, err := s.Usage(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// root + f (once, despite 3 links) + 20 × (d, x, g)
	if want := int64(1 + 1 + 60); u.Inodes != want {
		t.Fatalf("inodes %d, want %d", u.Inodes, want)
	}
	if u.Size < int64(len(data)) || u.Size > int64(2*len(data))+62*64<<10 {
		t.Fatalf("size %d, want about %d (hard links counted once)", u.Size, len(data))
	}
	if err := s.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	uc, err := s.Usage(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if uc != u {
		t.Fatalf("committed usage %+v, want the usage at commit %+v", uc, u)
	}
}

func TestImport(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "base", "", nil)
	ok := func(_ context.Context, dir string, r io.Reader) error {
		b := make([]byte, 5)
		n, _ := r.Read(b)
		return os.WriteFile(filepath.Join(dir, "file"), b[:n], 0o644)
	}
	info, err := s.Import(ctx, "layer", "base", strings.NewReader("hello"), ok, WithLabels(map[string]string{"k": "v"}))
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != KindCommitted || info.Parent != "base" || info.Labels["k"] != "v" {
		t.Fatalf("imported: %+v", info)
	}
	b, err := os.ReadFile(filepath.Join(s.fsDir(mustID(t, s, "layer")), "file"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("imported file: %q, %v", b, err)
	}
	_, err = s.Import(ctx, "layer", "base", strings.NewReader(""), ok)
	wantErr(t, "import existing", err, ErrAlreadyExists)

	boom := errors.New("corrupt layer")
	_, err = s.Import(ctx, "bad", "base", strings.NewReader(""), func(context.Context, string, io.Reader) error { return boom })
	wantErr(t, "failing apply", err, boom)
	var n int
	s.Walk(ctx, func(context.Context, Info) error { n++; return nil })
	if n != 2 {
		t.Fatalf("%d snapshots after a failed import, want 2", n)
	}
}

func TestConcurrentOperations(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "base", "", map[string]string{"f": "x"})
	const workers, rounds = 32, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				k := fmt.Sprintf("w%d-%d", w, i)
				run := func() error {
					if _, err := s.Prepare(ctx, k, "base"); err != nil {
						return err
					}
					if _, err := s.View(ctx, k+"-view", "base"); err != nil {
						return err
					}
					if _, err := s.Mounts(ctx, k); err != nil {
						return err
					}
					if err := s.Commit(ctx, k+"-c", k); err != nil {
						return err
					}
					// Everyone races for the same name: exactly one wins
					// per round, the others see ErrAlreadyExists.
					if _, err := s.Prepare(ctx, k+"-b", k+"-c"); err != nil {
						return err
					}
					if err := s.Commit(ctx, fmt.Sprintf("shared-%d", i), k+"-b"); err != nil {
						if !errors.Is(err, ErrAlreadyExists) {
							return err
						}
						if err := s.Remove(ctx, k+"-b"); err != nil {
							return err
						}
					}
					if err := s.Remove(ctx, k+"-view"); err != nil {
						return err
					}
					if _, err := s.Usage(ctx, k+"-c"); err != nil {
						return err
					}
					if err := s.Walk(ctx, func(context.Context, Info) error { return nil }, "kind==active"); err != nil {
						return err
					}
					if i%3 == 0 {
						if err := s.Cleanup(ctx); err != nil {
							return err
						}
					}
					return nil
				}
				if err := run(); err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Each round has exactly one shared-i; its parent can't go.
	for i := range rounds {
		info, err := s.Stat(ctx, fmt.Sprintf("shared-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, "remove parent of shared", s.Remove(ctx, info.Parent), ErrFailedPrecondition)
	}
	wantErr(t, "check", s.Check(ctx), nil)
}

func TestFormatRecorded(t *testing.T) {
	s := newTestStore(t)
	fi := s.Format()
	if fi.Version != FormatVersion || fi.Created.IsZero() || fi.Features == "" {
		t.Fatalf("format %+v", fi)
	}
	if os.Geteuid() == 0 && strings.HasPrefix(fi.Features, "not probed") {
		t.Fatalf("root, but the kernel was not probed: %s", fi.Features)
	}
	t.Logf("format %+v", fi)
	// Reopening keeps the recorded format, without probing again.
	root := s.Root()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.Format(); !slices.Equal(got.OverlayOptions, fi.OverlayOptions) || got.Features != fi.Features || !got.Created.Equal(fi.Created) {
		t.Fatalf("after reopen %+v, want %+v", got, fi)
	}
}

// A committed layer carries its name index next to its dir, where FUSE
// mounts (overlay.WithSiblingIndexFiles) find it.
func TestCommitWritesLayerIndex(t *testing.T) {
	s := newTestStore(t)
	mustCommitted(t, s, "base", "", map[string]string{"a": "1", "b": "2"})
	var id uint64
	if err := s.view(func(b buckets) error {
		r, err := b.get("base")
		id = r.ID
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fs := s.fsDir(id)
	li, err := overlay.ReadIndexFile(overlay.IndexPath(fs), fs)
	if err != nil {
		t.Fatalf("index of committed layer: %v", err)
	}
	if li.Dirs() != 1 {
		t.Errorf("index has %d dirs, want 1 (the root)", li.Dirs())
	}
}

package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
)

// TestBreakouts feeds hostile streams to Apply. Each case asserts a clear
// error or the documented safe result, and that nothing outside the layer
// dir changed: the sentinel parent dir (which holds the layer dir and an
// "etc/passwd" of its own) is snapshotted before and after, no inode of the
// layer is shared with it, and nothing appeared in the host's /tmp.
//
// The case list follows containerd's pkg/archive TestBreakouts.
func TestBreakouts(t *testing.T) {
	testutil.RequireRoot(t)
	type check func(t *testing.T, layer, sentinel string)
	fileIs := func(p, content string) check {
		return func(t *testing.T, layer, _ string) {
			t.Helper()
			b, err := os.ReadFile(filepath.Join(layer, p))
			if err != nil || string(b) != content {
				t.Errorf("%s = %q, %v; want %q", p, b, err, content)
			}
		}
	}
	sameInode := func(a, b string) check {
		return func(t *testing.T, layer, _ string) {
			t.Helper()
			var sa, sb unix.Stat_t
			if err := unix.Lstat(filepath.Join(layer, a), &sa); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lstat(filepath.Join(layer, b), &sb); err != nil {
				t.Fatal(err)
			}
			if sa.Ino != sb.Ino {
				t.Errorf("%s and %s are not the same inode", a, b)
			}
		}
	}
	isSymlink := func(p, target string) check {
		return func(t *testing.T, layer, _ string) {
			t.Helper()
			got, err := os.Readlink(filepath.Join(layer, p))
			if err != nil || got != target {
				t.Errorf("%s -> %q (%v), want -> %q", p, got, err, target)
			}
		}
	}
	all := func(cs ...check) check {
		return func(t *testing.T, layer, sentinel string) {
			for _, c := range cs {
				c(t, layer, sentinel)
			}
		}
	}
	tmpName := fmt.Sprintf("strata-breakout-%d", os.Getpid())

	cases := []struct {
		name string
		// ents builds the stream; sentinel is the absolute path of the
		// parent dir holding the layer.
		ents  func(sentinel string) []ent
		err   error // wanted sentinel error, or nil for a safe success
		check check
	}{
		{"DotDotEscape", func(string) []ent { return []ent{tFile("../escaped", "x", 0o644)} }, ErrUnsafePath, nil},
		{"DotDotEscapeDeep", func(string) []ent { return []ent{tDir("a", 0o755), tFile("a/../../escaped", "x", 0o644)} }, ErrUnsafePath, nil},
		{"DotDotEscapeAbsolute", func(string) []ent { return []ent{tFile("/../escaped", "x", 0o644)} }, ErrUnsafePath, nil},
		{"DotDotInsideIsFine", func(string) []ent { return []ent{tDir("a", 0o755), tFile("a/../b", "x", 0o644)} }, nil, fileIs("b", "x")},
		{"AbsoluteNameIsRelativeToLayer", func(string) []ent { return []ent{tDir("/etc", 0o755), tFile("/etc/passwd", "inside", 0o644)} }, nil,
			fileIs("etc/passwd", "inside")},
		{"AbsoluteSentinelPathStaysInLayer", func(s string) []ent { return []ent{tFile(s+"/etc/passwd", "inside", 0o644)} }, nil,
			func(t *testing.T, layer, s string) {
				fileIs(strings.TrimPrefix(s, "/")+"/etc/passwd", "inside")(t, layer, s)
			}},
		{"SymlinkToRootThenFile", func(string) []ent {
			return []ent{tSymlink("/", "foo"), tFile("foo/tmp/"+tmpName, "x", 0o644)}
		}, nil, fileIs("tmp/"+tmpName, "x")},
		{"SymlinkAbsolute", func(string) []ent {
			return []ent{tDir("etc", 0o755), tSymlink("/etc", "localetc"), tFile("localetc/unbroken", "inside", 0o644)}
		}, nil, fileIs("etc/unbroken", "inside")},
		{"SymlinkUpAndOut", func(string) []ent {
			return []ent{tDir("etc", 0o755), tDir("dummy", 0o755), tSymlink("/dummy/../../../etc", "localetc"), tFile("localetc/unbroken", "inside", 0o644)}
		}, nil, fileIs("etc/unbroken", "inside")},
		{"SymlinkToSentinelAbsolutePath", func(s string) []ent {
			return []ent{tSymlink(s+"/etc", "out"), tFile("out/passwd", "pwned", 0o644)}
		}, ErrInvalidArchive, nil},
		{"SymlinkChainEscape", func(string) []ent {
			return []ent{tDir("etc", 0o755), tSymlink("b", "a"), tSymlink("../../../../..", "b"), tFile("a/etc/passwd", "inside", 0o644)}
		}, nil, fileIs("etc/passwd", "inside")},
		{"SymlinkChainToSentinel", func(s string) []ent {
			return []ent{tSymlink("b", "a"), tSymlink(s, "b"), tFile("a/etc/passwd", "pwned", 0o644)}
		}, ErrInvalidArchive, nil},
		{"SymlinkOverridePath", func(string) []ent {
			return []ent{
				tDir("foo", 0o755), tDir("foo/tmp", 0o755), tFile("foo/tmp/"+tmpName, "first", 0o644),
				tSymlink("/", "foo"), tFile("foo/tmp/"+tmpName, "second", 0o644),
				tDir("foo", 0o755), tDir("foo/tmp", 0o755), tFile("foo/tmp/"+tmpName, "third", 0o644),
			}
		}, nil, all(fileIs("foo/tmp/"+tmpName, "third"), fileIs("tmp/"+tmpName, "second"))},
		{"HardlinkAbsoluteOutside", func(string) []ent { return []ent{tLink("/etc/passwd", "localpasswd")} }, ErrInvalidArchive, nil},
		{"HardlinkSentinelPath", func(s string) []ent { return []ent{tLink(s+"/etc/passwd", "localpasswd")} }, ErrInvalidArchive, nil},
		{"HardlinkDotDot", func(string) []ent { return []ent{tLink("../etc/passwd", "localpasswd")} }, ErrUnsafePath, nil},
		{"HardlinkDotDotLong", func(string) []ent {
			return []ent{tDir("etc", 0o755), tFile("etc/passwd", "inside", 0o644), tLink("../../../../../etc/passwd", "localpasswd")}
		}, ErrUnsafePath, nil},
		{"HardlinkThroughSymlinkDirOut", func(s string) []ent {
			return []ent{tSymlink(s+"/etc", "localetc"), tLink("localetc/passwd", "localpasswd")}
		}, ErrInvalidArchive, nil},
		{"HardlinkThroughSymlinkDirStaysIn", func(string) []ent {
			return []ent{tDir("etc", 0o755), tFile("etc/passwd", "inside", 0o644), tSymlink("../../../etc", "localetc"), tLink("/localetc/passwd", "localpasswd")}
		}, nil, sameInode("localpasswd", "etc/passwd")},
		{"HardlinkToEscapingSymlinkLinksTheSymlink", func(s string) []ent {
			return []ent{tSymlink(s+"/etc/passwd", "passwdlink"), tLink("passwdlink", "localpasswd")}
		}, nil, all(sameInode("localpasswd", "passwdlink"), func(t *testing.T, layer, s string) { isSymlink("localpasswd", s+"/etc/passwd")(t, layer, s) })},
		{"HardlinkSymlinkThenMode", func(s string) []ent {
			return []ent{tSymlink(s+"/etc/passwd", "l"), tLink("l", "dup"), tFile("other", "x", 0o777)}
		}, nil, nil},
		{"HardlinkMissingTarget", func(string) []ent { return []ent{tLink("nothere", "x")} }, ErrInvalidArchive, nil},
		{"HardlinkToWhiteout", func(string) []ent { return []ent{tWhiteout("gone"), tLink("gone", "x")} }, ErrInvalidArchive, nil},
		{"HardlinkToDir", func(string) []ent { return []ent{tDir("d", 0o755), tLink("d", "x")} }, ErrInvalidArchive, nil},
		{"WhiteoutThroughSymlinkOut", func(s string) []ent {
			return []ent{tSymlink(s+"/etc", "localetc"), tWhiteout("localetc/passwd")}
		}, ErrInvalidArchive, nil},
		{"OpaqueThroughSymlinkOut", func(s string) []ent {
			return []ent{tSymlink(s+"/etc", "localetc"), tOpaque("localetc")}
		}, ErrInvalidArchive, nil},
		{"SymlinkLoopParent", func(string) []ent { return []ent{tSymlink("b", "a"), tSymlink("a", "b"), tFile("a/x", "x", 0o644)} }, ErrInvalidArchive, nil},
		{"FileThroughFileParent", func(string) []ent { return []ent{tFile("f", "x", 0o644), tFile("f/g", "y", 0o644)} }, ErrInvalidArchive, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sentinel := t.TempDir()
			if err := os.MkdirAll(filepath.Join(sentinel, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(sentinel, "etc", "passwd"), []byte("outside"), 0o400); err != nil {
				t.Fatal(err)
			}
			layer := filepath.Join(sentinel, "layer")
			if err := os.Mkdir(layer, 0o755); err != nil {
				t.Fatal(err)
			}
			outside := fstree.WithIgnore(func(p string) bool { return p == "layer" })
			before := snap(t, sentinel, outside)
			_, hostTmpErr := os.Lstat("/tmp/" + tmpName)

			_, err := Apply(context.Background(), layer, bytes.NewReader(mkTar(t, tc.ents(sentinel)...)))
			switch {
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Errorf("err = %v, want %v", err, tc.err)
			case tc.err == nil && err != nil:
				t.Errorf("err = %v, want success", err)
			case err != nil:
				t.Logf("refused as expected: %v", err)
			}
			if err == nil && tc.check != nil {
				tc.check(t, layer, sentinel)
			}

			after := snap(t, sentinel, outside)
			if d := fstree.Diff(before, after); len(d) > 0 {
				t.Errorf("outside the layer changed:\n  %s", strings.Join(d, "\n  "))
			}
			if _, err := os.Lstat("/tmp/" + tmpName); err == nil && hostTmpErr != nil {
				os.Remove("/tmp/" + tmpName)
				t.Errorf("/tmp/%s was created outside the layer", tmpName)
			}
			outsideInodes := map[uint64]string{}
			_ = filepath.WalkDir(sentinel, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if p == layer {
					return filepath.SkipDir
				}
				var st unix.Stat_t
				if unix.Lstat(p, &st) == nil {
					outsideInodes[st.Ino] = p
				}
				return nil
			})
			_ = filepath.WalkDir(layer, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				var st unix.Stat_t
				if unix.Lstat(p, &st) == nil {
					if o, ok := outsideInodes[st.Ino]; ok {
						t.Errorf("%s shares an inode with %s outside the layer", p, o)
					}
				}
				return nil
			})
		})
	}
}

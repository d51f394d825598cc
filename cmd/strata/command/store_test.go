package command

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/ocidemo"
	"github.com/stratafs/strata/internal/testutil"
)

// demoStore imports the demo image (internal/ocidemo) into a new store and
// returns its --root and the image.
func demoStore(t *testing.T) (string, ocidemo.Image) {
	t.Helper()
	testutil.RequireRoot(t) // whiteouts are char devices: mknod
	dir := t.TempDir()
	img, err := ocidemo.Write(filepath.Join(dir, "img"))
	must(t, err)
	root := filepath.Join(dir, "store")
	r := run(t, "--root", root, "import-image", filepath.Join(dir, "img")+":"+ocidemo.Tag)
	equal(t, ExitOK, r.code, r.stderr)
	equal(t, img.ChainIDs[2].String()+"\n", r.stdout)
	return root, img
}

// runIn runs strata with --root root.
func runIn(t *testing.T, root string, args ...string) result {
	t.Helper()
	return run(t, append([]string{"--root", root}, args...)...)
}

// ok runs strata in root and requires success.
func ok(t *testing.T, root string, args ...string) string {
	t.Helper()
	r := runIn(t, root, args...)
	equal(t, ExitOK, r.code, r.stderr)
	return r.stdout
}

// decode parses JSON output into v.
func decode(t *testing.T, s string, v any) {
	t.Helper()
	must(t, json.Unmarshal([]byte(s), v), s)
}

// treeHash hashes every entry under root: path, mode, size, mtime, owner,
// content and xattrs, so that any change to the store shows.
func treeHash(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h := sha256.New()
		_, _ = fmt.Fprintf(h, "%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
		}
		_, _ = fmt.Fprint(h, xattrs(p))
		rel, _ := filepath.Rel(root, p)
		out[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	must(t, err)
	return out
}

func diffHashes(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k+" (new)")
		}
	}
	sort.Strings(d)
	return d
}

// lines splits output into lines without the trailing empty one.
func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

package bench

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/stratafs/strata/overlay"
	"golang.org/x/sys/unix"
)

// Flatten copies the merged view of layers (topmost first) into the empty
// directory dst, applying whiteouts (char 0/0) and opaque dirs of format f.
// It is the "native" baseline's one-time preparation, not an overlay
// implementation: it handles regular files, dirs and symlinks.
func Flatten(layers []string, dst string, f overlay.Format) error {
	for i := len(layers) - 1; i >= 0; i-- {
		if err := applyLayer(layers[i], dst, f); err != nil {
			return fmt.Errorf("flatten layer %s into %s: %w", layers[i], dst, err)
		}
	}
	return nil
}

func applyLayer(src, dst string, f overlay.Format) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		switch {
		case overlay.IsWhiteoutStat(&st):
			return os.RemoveAll(out)
		case d.IsDir():
			if rel != "." {
				if fi, err := os.Lstat(out); err == nil && !fi.IsDir() {
					if err := os.RemoveAll(out); err != nil {
						return err
					}
				}
			}
			op, err := f.DirOpacity(p)
			if err != nil {
				return err
			}
			if op == overlay.Opaque && rel != "." {
				if err := os.RemoveAll(out); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			return os.Chmod(out, fs.FileMode(st.Mode&0o7777))
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.RemoveAll(out); err != nil {
				return err
			}
			return os.Symlink(target, out)
		case d.Type().IsRegular():
			if err := os.RemoveAll(out); err != nil {
				return err
			}
			return copyFile(p, out, fs.FileMode(st.Mode&0o7777))
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, d.Type())
		}
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

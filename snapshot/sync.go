package snapshot

import (
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/snapshot/archive"
)

// fsyncLimit is the most inodes syncLayer fsyncs one by one; a larger
// layer is flushed with one syncfs. A container commit usually changes a
// handful of files, and fsyncing those is far cheaper than syncfs, which
// flushes everything dirty on the filesystem (other containers' writes
// too); an imported layer has thousands, and one syncfs beats thousands of
// journal commits.
const fsyncLimit = 256

// syncLayer makes the files of the layer dir durable: its own inodes
// (inodes, as the usage walk counted them) one by one when few, else the
// whole filesystem.
func syncLayer(dir string, inodes int64) error {
	if inodes > fsyncLimit {
		return archive.SyncDir(dir)
	}
	// Children before their dirs, so a dir's entries name synced inodes;
	// WalkDir visits a dir before its children, so collect and go back.
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if t := d.Type(); t.IsRegular() || t.IsDir() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(paths) - 1; i >= 0; i-- {
		fd, err := unix.Open(paths[i], unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: paths[i], Err: err}
		}
		err = unix.Fsync(fd)
		cerr := unix.Close(fd)
		if err != nil {
			return &os.PathError{Op: "fsync", Path: paths[i], Err: err}
		}
		if cerr != nil {
			return &os.PathError{Op: "close", Path: paths[i], Err: cerr}
		}
	}
	return nil
}

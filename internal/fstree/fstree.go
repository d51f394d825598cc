// Package fstree snapshots a directory tree into a comparable value and
// diffs two snapshots. Tests of the archive, the store and the mount
// backends use it to check that two access paths show the same tree:
// names, types, permission bits (incl. setuid/setgid/sticky), owners,
// mtimes, symlink targets, device numbers, xattrs, content and hard-link
// sharing.
//
// Snapshot reads with lstat/llistxattr and never follows symlinks. It
// records every xattr, overlay ones included, so a raw layer dir shows
// its whiteouts (char 0/0) and opaque markers; through an overlay mount
// the kernel hides them.
package fstree

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Node is one entry of a Tree.
type Node struct {
	Type   fs.FileMode // fs.ModeDir, fs.ModeSymlink, fs.ModeNamedPipe, fs.ModeDevice, fs.ModeDevice|fs.ModeCharDevice, fs.ModeSocket or 0 for regular
	Perm   uint32      // mode & 07777
	UID    uint32
	GID    uint32
	Size   int64 // regular files only
	Mtime  time.Time
	Atime  time.Time // recorded but not compared by Diff unless asked
	Rdev   uint64    // devices only
	Target string    // symlink target
	Digest string    // sha256 of regular file content
	Xattrs map[string]string
	// Link is, for a non-directory whose inode appears at several paths of
	// the tree, the smallest of those paths; "" otherwise.
	Link string
}

// Tree maps slash-separated paths relative to the root ("." is the root
// itself) to their nodes.
type Tree map[string]*Node

// Option tunes Snapshot and Diff.
type Option func(*config)

type config struct {
	atime   bool
	noRoot  bool
	ignore  func(string) bool
	noXattr func(string) bool
}

// WithAtime makes Diff compare access times too.
func WithAtime() Option { return func(c *config) { c.atime = true } }

// WithoutRoot makes Diff skip the root entry's own metadata.
func WithoutRoot() Option { return func(c *config) { c.noRoot = true } }

// WithIgnore makes Snapshot skip paths (and, for dirs, their subtree) for
// which f returns true.
func WithIgnore(f func(path string) bool) Option { return func(c *config) { c.ignore = f } }

// WithoutXattrs makes Snapshot drop xattrs whose name matches f.
func WithoutXattrs(f func(name string) bool) Option { return func(c *config) { c.noXattr = f } }

type devIno struct{ dev, ino uint64 }

// Snapshot walks dir and records every entry.
func Snapshot(dir string, opts ...Option) (Tree, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	t := Tree{}
	inodes := map[devIno][]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel != "." && c.ignore != nil && c.ignore(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		n := &Node{
			Perm:  st.Mode & 0o7777,
			UID:   st.Uid,
			GID:   st.Gid,
			Mtime: time.Unix(st.Mtim.Unix()),
			Atime: time.Unix(st.Atim.Unix()),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Type = fs.ModeDir
		case unix.S_IFLNK:
			n.Type = fs.ModeSymlink
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			n.Type = fs.ModeNamedPipe
		case unix.S_IFSOCK:
			n.Type = fs.ModeSocket
		case unix.S_IFCHR:
			n.Type = fs.ModeDevice | fs.ModeCharDevice
			n.Rdev = st.Rdev
		case unix.S_IFBLK:
			n.Type = fs.ModeDevice
			n.Rdev = st.Rdev
		case unix.S_IFREG:
			n.Size = st.Size
			if n.Digest, err = fileDigest(p); err != nil {
				return err
			}
		}
		if n.Xattrs, err = xattrs(p, c.noXattr); err != nil {
			return err
		}
		if n.Type != fs.ModeDir && st.Nlink > 1 {
			k := devIno{uint64(st.Dev), st.Ino}
			inodes[k] = append(inodes[k], rel)
		}
		t[rel] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fstree: snapshot %s: %w", dir, err)
	}
	for _, paths := range inodes {
		if len(paths) < 2 {
			continue
		}
		sort.Strings(paths)
		for _, p := range paths {
			t[p].Link = paths[0]
		}
	}
	return t, nil
}

func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // read-only
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func xattrs(p string, skip func(string) bool) (map[string]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ERANGE) {
		sz, err2 := unix.Llistxattr(p, nil)
		if err2 != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err2}
		}
		buf = make([]byte, sz)
		n, err = unix.Llistxattr(p, buf)
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	var m map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || (skip != nil && skip(name)) {
			continue
		}
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		v := make([]byte, sz)
		sz, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		if m == nil {
			m = map[string]string{}
		}
		m[name] = string(v[:sz])
	}
	return m, nil
}

// Diff lists the differences between a and b, one human-readable line
// each, sorted by path. An empty result means the trees agree.
func Diff(a, b Tree, opts ...Option) []string {
	var c config
	for _, o := range opts {
		o(&c)
	}
	var out []string
	paths := map[string]struct{}{}
	for p := range a {
		paths[p] = struct{}{}
	}
	for p := range b {
		paths[p] = struct{}{}
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	for _, p := range sorted {
		x, y := a[p], b[p]
		switch {
		case x == nil:
			out = append(out, fmt.Sprintf("%s: only in b (%s)", p, y.kind()))
			continue
		case y == nil:
			out = append(out, fmt.Sprintf("%s: only in a (%s)", p, x.kind()))
			continue
		}
		if p == "." && c.noRoot {
			continue
		}
		add := func(what string, va, vb any) {
			out = append(out, fmt.Sprintf("%s: %s differs: %v != %v", p, what, va, vb))
		}
		if x.Type != y.Type {
			add("type", x.kind(), y.kind())
			continue
		}
		if x.Perm != y.Perm {
			add("mode", fmt.Sprintf("%04o", x.Perm), fmt.Sprintf("%04o", y.Perm))
		}
		if x.UID != y.UID || x.GID != y.GID {
			add("owner", fmt.Sprintf("%d:%d", x.UID, x.GID), fmt.Sprintf("%d:%d", y.UID, y.GID))
		}
		if x.Type != fs.ModeSymlink && !x.Mtime.Equal(y.Mtime) {
			add("mtime", x.Mtime.UTC().Format(time.RFC3339Nano), y.Mtime.UTC().Format(time.RFC3339Nano))
		}
		if c.atime && !x.Atime.Equal(y.Atime) {
			add("atime", x.Atime.UTC().Format(time.RFC3339Nano), y.Atime.UTC().Format(time.RFC3339Nano))
		}
		if x.Size != y.Size {
			add("size", x.Size, y.Size)
		}
		if x.Digest != y.Digest {
			add("content", short(x.Digest), short(y.Digest))
		}
		if x.Target != y.Target {
			add("symlink target", x.Target, y.Target)
		}
		if x.Rdev != y.Rdev {
			add("rdev", fmt.Sprintf("%d:%d", unix.Major(x.Rdev), unix.Minor(x.Rdev)), fmt.Sprintf("%d:%d", unix.Major(y.Rdev), unix.Minor(y.Rdev)))
		}
		if x.Link != y.Link {
			add("hard-link group", linkName(x.Link), linkName(y.Link))
		}
		for _, k := range unionKeys(x.Xattrs, y.Xattrs) {
			va, oka := x.Xattrs[k]
			vb, okb := y.Xattrs[k]
			if oka != okb || va != vb {
				add("xattr "+k, xattrVal(va, oka), xattrVal(vb, okb))
			}
		}
	}
	return out
}

func (n *Node) kind() string {
	switch n.Type {
	case fs.ModeDir:
		return "dir"
	case fs.ModeSymlink:
		return "symlink"
	case fs.ModeNamedPipe:
		return "fifo"
	case fs.ModeSocket:
		return "socket"
	case fs.ModeDevice | fs.ModeCharDevice:
		if n.Rdev == 0 {
			return "whiteout (char 0/0)"
		}
		return "char device"
	case fs.ModeDevice:
		return "block device"
	}
	return "file"
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func linkName(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func xattrVal(v string, ok bool) string {
	if !ok {
		return "(absent)"
	}
	return fmt.Sprintf("%q", v)
}

func unionKeys(a, b map[string]string) []string {
	var ks []string
	for k := range a {
		ks = append(ks, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

package fuse

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dirFds keeps open fds of a few upper dirs, by node, for the mutating
// requests that come in runs in one dir (rm -rf, untar, touch of many
// files, create of many files): each then acts on a held dir fd instead of
// resolving the dir's path again. A held fd follows its dir on rename;
// every request that may remove or replace an upper dir (rmdir, rename,
// exchange) drops the whole cache first.
//
// Guarded by union.cuMu.
type dirFds struct {
	ents [4]dirFd
	next int // slot to reuse next
}

type dirFd struct {
	n  *node
	fd int // open O_RDONLY|O_DIRECTORY (or O_PATH); valid while n is set
}

// upperDirFd returns an fd of n's upper dir (n must be in the upper
// layer), opened with openUpper and kept in the cache. The fd stays valid
// while u.cuMu is held; do not close it.
//
// Preconditions: u.cuMu is held.
func (u *union) upperDirFd(n *node) (int, error) {
	c := &u.dirs
	for i := range c.ents {
		if c.ents[i].n == n {
			return c.ents[i].fd, nil
		}
	}
	rel := n.rel()
	fd, err := u.openUpper(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if errors.Is(err, unix.EACCES) {
		// a dir the server may not read (not root): an O_PATH fd does
		// for the *at calls; dirFdTimes and markImpureFd go through
		// /proc for the rest
		fd, err = u.openUpper(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return -1, err
	}
	e := &c.ents[c.next]
	if e.n != nil {
		_ = unix.Close(e.fd) // read-only dir fd: nothing to flush
	}
	e.n, e.fd = n, fd
	c.next = (c.next + 1) % len(c.ents)
	return fd, nil
}

// dropDirFds closes every cached dir fd.
//
// Preconditions: u.cuMu is held (or the union is being closed).
func (u *union) dropDirFds() {
	c := &u.dirs
	for i := range c.ents {
		if c.ents[i].n != nil {
			_ = unix.Close(c.ents[i].fd) // read-only dir fd
			c.ents[i] = dirFd{}
		}
	}
}

// creation is the owner a file the server creates in the work dir gets
// without a chown: copy-up skips fchown when the copy's owner matches.
type creation struct {
	uid, gid uint32
	egid     uint32 // the group of a file created in a dir without set-group-ID
}

// newCreation reads the server's ids and the work dir's set-group-ID bit
// (new files then take the dir's group).
func newCreation(work string) creation {
	c := creation{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), egid: uint32(os.Getegid())} //nolint:gosec // ids are 32-bit
	var st unix.Stat_t
	if work != "" && unix.Stat(work, &st) == nil && st.Mode&unix.S_ISGID != 0 {
		c.gid = st.Gid
	}
	return c
}

// dirFdTimes sets the times of the dir open as dfd, which may be an O_PATH
// fd (then through its /proc/self/fd link).
func dirFdTimes(dfd int, ts *[2]unix.Timespec) error {
	err := futimens(dfd, ts)
	if errors.Is(err, unix.EBADF) {
		err = unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(dfd), ts[:], 0)
	}
	return err
}

package fuse

import (
	"bytes"
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// The "origin" xattr records, on a copied-up object, a file handle of the
// lower object it came from, in kernel overlayfs's struct ovl_fb layout
// (fs/overlayfs/overlayfs.h):
//
//	u8 version (0), u8 magic (0xfb), u8 len (whole struct), u8 flags,
//	u8 type (the handle type), u8 uuid[16] (lower fs), fid bytes.
//
// strata writes it on copy-up exactly as the kernel does, and reads it
// (kernel- or strata-written) to report the lower inode number for a
// copied-up object, so st_ino is stable across copy-up and remount.

const (
	fhVersion    = 0
	fhMagic      = 0xfb
	fhHeaderSize = 21
	fhFlagBigEnd = 1 << 0
	fhFlagAnyEnd = 1 << 1
	fhFlagUpper  = 1 << 2
)

// fsIocGetFSUUID is FS_IOC_GETFSUUID: _IOR(0x15, 0, struct fsuuid2), the
// struct being { u8 len; u8 uuid[16]; }.
const fsIocGetFSUUID = 0x80111500

type fsuuid2 struct {
	Len  uint8
	UUID [16]byte
}

// fsUUID returns the uuid of the filesystem holding p, or nil.
func fsUUID(p string) []byte {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var u fsuuid2
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetFSUUID, uintptr(unsafe.Pointer(&u))); e != 0 {
		return nil
	}
	if u.Len == 0 || u.Len > 16 {
		return nil
	}
	out := make([]byte, 16)
	copy(out, u.UUID[:u.Len])
	return out
}

// encodeOrigin builds the origin xattr value for the lower object at
// lowers[layer]/rel, or nil if its filesystem cannot give a handle.
func (u *union) encodeOrigin(r lref) []byte {
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, u.lowerPath(r), 0)
	if err != nil {
		return nil
	}
	fid := h.Bytes()
	n := fhHeaderSize + len(fid)
	if n > 255 {
		return nil
	}
	b := make([]byte, n)
	b[0], b[1], b[2], b[3], b[4] = fhVersion, fhMagic, byte(n), 0, byte(h.Type())
	if u.uuids[r.layer] != nil {
		copy(b[5:21], u.uuids[r.layer])
	}
	copy(b[21:], fid)
	return b
}

// originIno returns the union inode number of the origin of the upper
// object at p. Like the kernel with index=off, a non-dir whose origin has
// several links reports its own number (copy-up broke the link).
func (u *union) originIno(p string, isDir bool) (uint64, bool) {
	v, ok, err := getxattr(p, u.format.Xattr(overlay.XattrOrigin))
	if err != nil || !ok || len(v) < fhHeaderSize {
		return 0, false
	}
	b := []byte(v)
	if b[0] != fhVersion || b[1] != fhMagic || int(b[2]) != len(b) ||
		b[3]&^(fhFlagBigEnd|fhFlagAnyEnd|fhFlagUpper) != 0 || b[3]&(fhFlagUpper|fhFlagBigEnd) != 0 {
		return 0, false
	}
	uuid := b[5:21]
	null := bytes.Equal(uuid, make([]byte, 16))
	h := unix.NewFileHandle(int32(b[4]), b[21:])
	tried := map[string]bool{}
	for i, lu := range u.uuids {
		if !null && !bytes.Equal(lu, uuid) {
			continue
		}
		key := string(lu)
		if lu != nil && tried[key] {
			continue
		}
		tried[key] = true
		fd, err := unix.OpenByHandleAt(u.lowerFds[i], h, unix.O_PATH|unix.O_CLOEXEC)
		if err != nil {
			if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				continue
			}
			return 0, false
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err != nil {
			return 0, false
		}
		if !isDir && st.Nlink > 1 {
			return 0, false
		}
		return u.ino(st.Dev, st.Ino), true
	}
	return 0, false
}

// sysStat views a unix.Stat_t as the identical syscall.Stat_t go-fuse takes.
func sysStat(st *unix.Stat_t) *syscall.Stat_t { return (*syscall.Stat_t)(unsafe.Pointer(st)) }

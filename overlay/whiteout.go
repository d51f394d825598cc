package overlay

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// This file is the one place that knows how whiteouts, opaque directories
// and the other overlay markers are encoded, on disk and in OCI tar streams.
//
// On disk (kernel overlayfs, Documentation/filesystems/overlayfs.rst):
//   - whiteout: character device 0/0, or an empty regular file with the
//     "whiteout" xattr inside a directory whose "opaque" xattr is "x";
//   - opaque directory: "opaque" xattr "y".
//
// In tar streams (OCI image spec, layer.md "Whiteouts"):
//   - ".wh.NAME" deletes NAME from lower layers;
//   - ".wh..wh..opq" makes its directory opaque.
// https://github.com/opencontainers/image-spec/blob/main/layer.md#whiteouts

const (
	// OCIWhiteoutPrefix prefixes the name of an OCI whiteout entry.
	OCIWhiteoutPrefix = ".wh."
	// OCIWhiteoutMetaPrefix prefixes names reserved by the OCI spec.
	OCIWhiteoutMetaPrefix = OCIWhiteoutPrefix + OCIWhiteoutPrefix
	// OCIOpaqueMarker is the OCI entry that marks its directory opaque.
	OCIOpaqueMarker = OCIWhiteoutMetaPrefix + ".opq"

	// TrustedPrefix is the xattr namespace kernel overlayfs uses by default.
	TrustedPrefix = "trusted.overlay."
	// UserPrefix is the namespace used with the userxattr mount option.
	UserPrefix = "user.overlay."

	// Names of overlay xattrs, without namespace prefix.
	XattrOpaque   = "opaque"
	XattrWhiteout = "whiteout"
	XattrRedirect = "redirect"
	XattrMetacopy = "metacopy"
	XattrOrigin   = "origin"
	XattrImpure   = "impure"
	XattrNlink    = "nlink"
	XattrUpper    = "upper"

	// Values of the opaque xattr.
	OpaqueYes       = "y" // the directory hides all lower contents
	OpaqueXWhiteout = "x" // the directory holds xattr-form whiteouts
)

// Format says how overlay metadata is encoded in a stack's layers.
// The zero value is the kernel's default (trusted.overlay.* xattrs).
type Format struct {
	// UserXattr selects the user.overlay.* namespace (kernel userxattr).
	UserXattr bool
}

// Prefix returns the overlay xattr namespace prefix of the format.
func (f Format) Prefix() string {
	if f.UserXattr {
		return UserPrefix
	}
	return TrustedPrefix
}

// Xattr returns the full xattr name of an overlay attribute, e.g.
// Xattr(XattrOpaque) == "trusted.overlay.opaque".
func (f Format) Xattr(name string) string { return f.Prefix() + name }

// IsOverlayXattr reports whether an xattr name belongs to overlayfs in
// either namespace. Such xattrs are never taken from untrusted layers and
// are hidden from users of a union.
func IsOverlayXattr(name string) bool {
	return strings.HasPrefix(name, TrustedPrefix) || strings.HasPrefix(name, UserPrefix)
}

// IsWhiteoutStat reports whether st describes a kernel whiteout: a
// character device with device number 0/0.
func IsWhiteoutStat(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// IsWhiteoutMode reports whether an os.FileMode and device number describe
// a kernel whiteout.
func IsWhiteoutMode(mode os.FileMode, rdev uint64) bool {
	return mode&os.ModeCharDevice != 0 && mode&os.ModeDevice != 0 && rdev == 0
}

// getxattr reads a small xattr of path without following a final symlink.
// A missing attribute yields ("", false, nil).
func getxattr(p, name string) (string, bool, error) {
	var buf [256]byte
	n, err := unix.Lgetxattr(p, name, buf[:])
	switch {
	case err == nil:
		return string(buf[:n]), true, nil
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return "", false, nil
	case errors.Is(err, unix.ERANGE):
		size, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return "", false, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		big := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, big)
		if err != nil {
			return "", false, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		return string(big[:n]), true, nil
	default:
		return "", false, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
	}
}

// Opacity is the state of a directory's opaque marker.
type Opacity int

const (
	NotOpaque         Opacity = iota // lower contents show through
	Opaque                           // opaque="y": lower contents are hidden
	HasXattrWhiteouts                // opaque="x": children may be xattr whiteouts
)

// DirOpacity reads the opaque marker of the directory at dir.
func (f Format) DirOpacity(dir string) (Opacity, error) {
	v, ok, err := getxattr(dir, f.Xattr(XattrOpaque))
	if err != nil || !ok {
		return NotOpaque, err
	}
	switch v {
	case OpaqueYes:
		return Opaque, nil
	case OpaqueXWhiteout:
		return HasXattrWhiteouts, nil
	}
	return NotOpaque, nil
}

// IsXattrWhiteout reports whether the entry at p, whose lstat is st, is an
// xattr-form whiteout. It is one only if it is an empty regular file with
// the whiteout xattr and its parent dir is marked opaque="x"; the caller
// passes that parent state as parentX. The kernel honours this form in
// lower layers only.
func (f Format) IsXattrWhiteout(p string, st *unix.Stat_t, parentX bool) (bool, error) {
	if !parentX || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false, nil
	}
	_, ok, err := getxattr(p, f.Xattr(XattrWhiteout))
	return ok, err
}

// MakeWhiteout creates a kernel whiteout (char device 0/0) named name in
// dir. It fails with EEXIST if the name exists.
func MakeWhiteout(dir, name string) error {
	p := path.Join(dir, name)
	if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil { // mode 0000, device 0/0
		return &os.PathError{Op: "mknod whiteout", Path: p, Err: err}
	}
	return nil
}

// SetOpaque marks the directory dir opaque (opaque="y").
func (f Format) SetOpaque(dir string) error {
	if err := unix.Lsetxattr(dir, f.Xattr(XattrOpaque), []byte(OpaqueYes), 0); err != nil {
		return &os.PathError{Op: "setxattr " + f.Xattr(XattrOpaque), Path: dir, Err: err}
	}
	return nil
}

// OCIKind classifies an entry name of an OCI layer tar.
type OCIKind int

const (
	OCIRegular  OCIKind = iota // an ordinary entry
	OCIWhiteout                // ".wh.NAME": delete NAME
	OCIOpaque                  // ".wh..wh..opq": make the directory opaque
)

// ParseOCIName classifies the base name of an OCI tar entry. For a
// whiteout it returns the name being deleted. Reserved ".wh..wh." names
// other than the opaque marker, and whiteouts of "", "." or "..", are
// errors.
func ParseOCIName(base string) (OCIKind, string, error) {
	if !strings.HasPrefix(base, OCIWhiteoutPrefix) {
		return OCIRegular, base, nil
	}
	if base == OCIOpaqueMarker {
		return OCIOpaque, "", nil
	}
	if strings.HasPrefix(base, OCIWhiteoutMetaPrefix) {
		return 0, "", fmt.Errorf("reserved whiteout name %q: %w", base, ErrInvalidPath)
	}
	target := strings.TrimPrefix(base, OCIWhiteoutPrefix)
	if target == "" || target == "." || target == ".." || strings.ContainsRune(target, '/') {
		return 0, "", fmt.Errorf("whiteout %q names no valid entry: %w", base, ErrInvalidPath)
	}
	return OCIWhiteout, target, nil
}

// OCIWhiteoutName returns the tar entry name that deletes name.
func OCIWhiteoutName(name string) string { return OCIWhiteoutPrefix + name }

// Redirect reads the "redirect" xattr of p (a renamed directory or a
// metacopy file whose data lives at another path). ok is false when p has
// none. An absolute value is a path from the layer root; a relative one
// names an entry of the same parent directory in the lower layers.
func (f Format) Redirect(p string) (target string, ok bool, err error) {
	return getxattr(p, f.Xattr(XattrRedirect))
}

// IsMetacopy reports whether p carries the "metacopy" xattr: a regular file
// whose data is that of a lower file (metacopy=on copy-up).
func (f Format) IsMetacopy(p string) (bool, error) {
	_, ok, err := getxattr(p, f.Xattr(XattrMetacopy))
	return ok, err
}

// Package overlaytest is a conformance suite for union filesystems that
// serve strata's layer format: kernel overlayfs (the reference) and
// strata's FUSE backend.
//
// # Shape
//
// [All] maps a check's name to a func(*testing.T, [Backend]); [Run] runs
// every check as a subtest, in name order. A check builds its own layer
// dirs under t.TempDir (files, dirs, symlinks, hard links, whiteouts,
// opaque dirs, xattrs, all in kernel overlayfs's on-disk format with
// trusted.overlay.* xattrs), asks the [Backend] to mount them, acts on the
// mount, and may unmount to inspect what landed in the upper dir on disk
// and remount to see that the result survives.
//
// To run the suite against a new backend, implement [Backend] and
// [Mounted] and call Run from a test:
//
//	func TestFUSE(t *testing.T) {
//		testutil.RequireFUSE(t)
//		overlaytest.Run(t, myBackend{})
//	}
//
// [Kernel] is the kernel overlayfs backend, mounted with strata's format
// options (see overlay.FormatOptions); TestKernel runs the suite on it.
//
// Layers hold overlay metadata in the trusted.overlay.* namespace (the
// checks write it there with overlay.Format{}), so a backend must read
// that form. Whiteouts in lower layers come in both forms (char device
// 0/0, and the xattr form under an opaque="x" dir); whiteouts a backend
// writes must be char devices 0/0, as the kernel writes them.
//
// A backend that cannot pass some checks yet implements [Skipper]; a
// caller can also run single checks from All itself.
//
// # Quirks
//
// Where backends may legitimately differ (the kernel's known quirks, or an
// on-disk encoding that is one of two valid ones), a check accepts every
// acceptable behaviour, logs which one it saw as
//
//	quirk <name>=<true|false>: <detail>
//
// and, if the backend pins its quirks (implements [Quirker]), fails when
// the behaviour differs from the pinned one. [Run] logs a summary of all
// observed quirks at the end. A quirk is never a licence for wrong
// data: every accepted behaviour is spelled out in the check.
package overlaytest

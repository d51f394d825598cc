package archive

import "errors"

// Sentinel errors. Callers classify with errors.Is; messages carry the
// entry name or path.
var (
	// ErrDigestMismatch: the stream's digest or diff ID is not the expected one.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnsafePath: an entry name or link target escapes the layer root.
	ErrUnsafePath = errors.New("unsafe path in layer")
	// ErrInvalidArchive: a malformed or unsupported entry (reserved
	// whiteout name, unknown type, missing hard-link target, ...).
	ErrInvalidArchive = errors.New("invalid layer archive")
	// ErrRefused: an entry the options forbid (e.g. a device node under
	// DevicesRefuse).
	ErrRefused = errors.New("entry refused by options")
	// ErrNotSupported: the kernel lacks a feature Apply needs (openat2).
	ErrNotSupported = errors.New("not supported by this kernel")
)

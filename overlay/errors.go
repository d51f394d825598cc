package overlay

import "errors"

// Sentinel errors. Callers classify with errors.Is; messages carry context.
var (
	// ErrTooManyLayers: the kernel refuses more than MaxKernelLowers lower layers.
	ErrTooManyLayers = errors.New("too many lower layers for kernel overlayfs")
	// ErrInvalidPath: a path escapes the union root or is not clean.
	ErrInvalidPath = errors.New("invalid path")
	// ErrInUse: an upper or work dir is already used by another overlay mount.
	ErrInUse = errors.New("already in use by another overlay mount")
	// ErrInconsistent: overlay metadata in the layers is invalid or
	// contradictory (a bad redirect, a metacopy file without lower data).
	ErrInconsistent = errors.New("inconsistent overlay metadata")
	// ErrNotSupported: the running kernel lacks a needed feature.
	ErrNotSupported = errors.New("not supported by this kernel")
)

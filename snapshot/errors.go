package snapshot

import "errors"

// Sentinel errors. Classify with errors.Is; the messages carry the context.
// The containerd adapter maps the first five to containerd's errdefs.
var (
	// ErrNotFound: no snapshot has the key or name.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the key or name is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: an empty key, a parent that is not committed, an
	// immutable field in Update, a malformed filter.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the snapshot is of the wrong kind for the
	// operation, or has children.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrNotImplemented: the operation is designed but not built yet (the
	// FUSE backend).
	ErrNotImplemented = errors.New("not implemented")

	// ErrLocked: another process (or another Store in this process) has
	// the store open. The message names the owner.
	ErrLocked = errors.New("store is locked by another owner")
	// ErrUnsupportedFormat: the store was written by a newer strata.
	ErrUnsupportedFormat = errors.New("unsupported store format")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("store is closed")
	// ErrInconsistent: Check found metadata and disk disagreeing.
	ErrInconsistent = errors.New("store is inconsistent")
)

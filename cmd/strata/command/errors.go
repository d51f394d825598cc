package command

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
	"github.com/stratafs/strata/snapshot/archive"
)

// Exit statuses of strata, documented in `strata help` (see exitStatusHelp).
const (
	ExitOK           = 0 // success
	ExitFailure      = 1 // any failure not classified below
	ExitUsage        = 2 // usage error or invalid argument
	ExitNotFound     = 3 // a path, mount or object does not exist
	ExitExists       = 4 // already exists or in use
	ExitNotSupported = 5 // backend not built, or kernel feature missing
	ExitLocked       = 6 // the store is owned by another process, or has a leaked mount
	ExitInconsistent = 7 // check found problems in the store
)

const exitStatusHelp = `Exit status:
  0  success
  1  failure not classified below
  2  usage error or invalid argument
  3  not found (path, mount, object)
  4  already exists or in use
  5  not supported (backend not built, kernel feature missing)
  6  the store is locked by another process (the message names it)
     or has a leaked mount under its root (strata check --repair)
  7  check found the store inconsistent`

// Sentinels of the command layer. Classify with errors.Is.
var (
	// ErrUsage marks a malformed command line or an invalid argument.
	ErrUsage = errors.New("usage")
	// ErrNotMounted: the target of umount is not a mount point.
	ErrNotMounted = errors.New("not a mount point")
	// ErrBackendNotBuilt: the chosen backend is not part of this binary.
	ErrBackendNotBuilt = errors.New("backend not built")
)

// classified gives err the class kind (one of the sentinels above) for
// errors.Is while its message stays err's own.
type classified struct{ err, kind error }

func (e classified) Error() string   { return e.err.Error() }
func (e classified) Unwrap() []error { return []error{e.err, e.kind} }

// exitCoded carries an exit status decided elsewhere (by a FUSE server
// process, reported through its readiness pipe).
type exitCoded struct {
	err  error
	code int
}

func (e exitCoded) Error() string { return e.err.Error() }
func (e exitCoded) Unwrap() error { return e.err }

// usagef formats a usage error.
func usagef(format string, a ...any) error {
	return classified{fmt.Errorf(format, a...), ErrUsage}
}

// ExitCode maps err to strata's exit status.
func ExitCode(err error) int {
	if ec := (exitCoded{}); errors.As(err, &ec) {
		return ec.code
	}
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, snapshot.ErrLocked), errors.Is(err, ErrLeakedMount):
		return ExitLocked
	case errors.Is(err, snapshot.ErrInconsistent):
		return ExitInconsistent
	case errors.Is(err, snapshot.ErrInvalidArgument),
		errors.Is(err, archive.ErrDigestMismatch),
		errors.Is(err, archive.ErrInvalidArchive),
		errors.Is(err, archive.ErrUnsafePath),
		errors.Is(err, archive.ErrRefused),
		errors.Is(err, gzip.ErrChecksum),
		errors.Is(err, gzip.ErrHeader):
		return ExitUsage
	case errors.Is(err, snapshot.ErrNotFound):
		return ExitNotFound
	case errors.Is(err, snapshot.ErrAlreadyExists):
		return ExitExists
	case errors.Is(err, snapshot.ErrNotImplemented):
		return ExitNotSupported
	case errors.Is(err, ErrUsage),
		errors.Is(err, overlay.ErrInvalidPath),
		errors.Is(err, fs.ErrInvalid),
		errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.EINVAL):
		return ExitUsage
	case errors.Is(err, ErrNotMounted),
		errors.Is(err, fs.ErrNotExist):
		return ExitNotFound
	case errors.Is(err, overlay.ErrInUse),
		errors.Is(err, fs.ErrExist),
		errors.Is(err, syscall.EBUSY):
		return ExitExists
	case errors.Is(err, ErrBackendNotBuilt),
		errors.Is(err, overlay.ErrNotSupported),
		errors.Is(err, overlay.ErrTooManyLayers),
		errors.Is(err, syscall.ENODEV),
		errors.Is(err, syscall.ENOTSUP):
		return ExitNotSupported
	}
	return ExitFailure
}

// pathCause returns the cause inside a *fs.PathError (the errno), for
// messages that already name the path; other errors come back unchanged.
func pathCause(err error) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

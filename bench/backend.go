package bench

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Classify with errors.Is.
var (
	// ErrUnavailable: a backend cannot run on this machine (missing binary,
	// kernel feature, privilege) or is not built yet.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrUnknownBackend: no backend has the requested name.
	ErrUnknownBackend = errors.New("unknown backend")
	// ErrUnknownWorkload: no workload has the requested name.
	ErrUnknownWorkload = errors.New("unknown workload")
	// ErrNoSpace: the output filesystem is too small for the layer set.
	ErrNoSpace = errors.New("not enough free disk space")
	// ErrInterrupted: Options.Stop was closed during the run.
	ErrInterrupted = errors.New("interrupted")
	// ErrWrongResult: a workload's result check failed.
	ErrWrongResult = errors.New("wrong result")
)

// Backend mounts a stack of layer directories.
type Backend interface {
	// Name is the backend's stable name, used on the command line and in
	// reports.
	Name() string
	// Available returns nil if the backend can mount on this machine, or an
	// error wrapping ErrUnavailable that says why not.
	Available() error
	// Mount mounts layers (topmost first) on target. With upper == "" the
	// mount is read-only; otherwise upper and work are empty dirs on the
	// same filesystem that receive all changes. The returned func unmounts
	// and releases everything Mount created.
	Mount(layers []string, upper, work, target string) (unmount func() error, err error)
}

// Preparer is implemented by backends that do one-time work per layer
// list before they can mount it (native flattens the layers). Run calls
// Prepare, untimed, before every run's first mount, so that a workload
// that times its mount (TimesMount) does not time that work. fixup, when
// not nil, is applied once to a flattened copy of layers (Workload.Fixup).
type Preparer interface {
	Prepare(layers []string, fixup func(dir string) error) error
}

// Durabler is implemented by backends that can say how durable a copy-up
// is when the mutating call returns. Backends without it report "n/a".
type Durabler interface {
	CopyUpDurability() string
}

func durability(b Backend) string {
	if d, ok := b.(Durabler); ok {
		return d.CopyUpDurability()
	}
	return "n/a"
}

// AllBackends returns every known backend, in report order. scratch is a
// directory the backends may use for private state (flattened copies,
// empty upper dirs).
func AllBackends(scratch string) []Backend {
	return []Backend{
		newNative(scratch),
		&kernelBackend{name: "kernel-overlayfs", scratch: scratch},
		&kernelBackend{name: "strata-kernel", strata: true, scratch: scratch},
		newFuseOverlayfs(),
		newStrataFUSE(),
	}
}

// BackendStatus is one line of ListBackends.
type BackendStatus struct {
	Name string `json:"name"`
	// Err is nil when the backend is available.
	Err error `json:"-"`
	// Reason is Err as text, "" when available.
	Reason string `json:"reason,omitempty"`
}

// ListBackends reports the availability of every backend in all.
func ListBackends(all []Backend) []BackendStatus {
	var out []BackendStatus
	for _, b := range all {
		st := BackendStatus{Name: b.Name(), Err: b.Available()}
		if st.Err != nil {
			st.Reason = st.Err.Error()
		}
		out = append(out, st)
	}
	return out
}

// SelectBackends picks backends from all by name. With names empty it
// returns every available backend and the unavailable ones as skipped.
// With names given, every named backend must exist and be available: the
// error wraps ErrUnknownBackend or ErrUnavailable and names each culprit.
func SelectBackends(all []Backend, names []string) (sel []Backend, skipped []BackendStatus, err error) {
	if len(names) == 0 {
		for _, st := range ListBackends(all) {
			if st.Err != nil {
				skipped = append(skipped, st)
				continue
			}
			for _, b := range all {
				if b.Name() == st.Name {
					sel = append(sel, b)
				}
			}
		}
		if len(sel) == 0 {
			return nil, skipped, fmt.Errorf("bench: no backend is available: %w", ErrUnavailable)
		}
		return sel, skipped, nil
	}
	var errs []error
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		var found Backend
		for _, b := range all {
			if b.Name() == n {
				found = b
			}
		}
		if found == nil {
			errs = append(errs, fmt.Errorf("backend %q: %w (known: %s)", n, ErrUnknownBackend, strings.Join(backendNames(all), ", ")))
			continue
		}
		if e := found.Available(); e != nil {
			errs = append(errs, fmt.Errorf("backend %q was asked for but cannot run: %w", n, e))
			continue
		}
		sel = append(sel, found)
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return sel, nil, nil
}

func backendNames(all []Backend) []string {
	var ns []string
	for _, b := range all {
		ns = append(ns, b.Name())
	}
	return ns
}

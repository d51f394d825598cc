package overlay

import (
	"fmt"
	"os"
	"path/filepath"
)

// Stack is an ordered set of layer directories: an optional writable upper
// layer (with its work dir) above read-only lower layers, topmost first.
// A Stack's configuration is immutable after NewStack; the only mutable
// state (caches and per-path locks, see state) guards itself, so a Stack is
// safe for concurrent use.
type Stack struct {
	upper    string   // "" for a read-only stack
	work     string   // "" for a read-only stack
	lowers   []string // topmost first, at least one
	layers   []string // upper (if any) followed by lowers
	format   Format
	volatile bool // copy-up skips fsync (see WithVolatile)

	state unionState // lookup caches and copy-up locks (lookup.go, copyup.go)
}

// StackOption configures NewStack.
type StackOption func(*Stack)

// WithUpper adds a writable upper layer and its work dir. Both must be on
// the same filesystem; the work dir must be empty and not in use.
func WithUpper(upper, work string) StackOption {
	return func(s *Stack) { s.upper, s.work = upper, work }
}

// WithUserXattr stores overlay metadata in user.overlay.* xattrs instead of
// trusted.overlay.* (the kernel's userxattr option).
func WithUserXattr() StackOption {
	return func(s *Stack) { s.format.UserXattr = true }
}

// NewStack builds a stack over lowers (topmost first). Paths are made
// absolute; each must be an existing directory.
func NewStack(lowers []string, opts ...StackOption) (*Stack, error) {
	s := &Stack{}
	for _, o := range opts {
		o(s)
	}
	if len(lowers) == 0 && s.upper == "" {
		return nil, fmt.Errorf("overlay: stack needs at least one layer")
	}
	if (s.upper == "") != (s.work == "") {
		return nil, fmt.Errorf("overlay: upper and work dir go together (upper %q, work %q)", s.upper, s.work)
	}
	var err error
	for _, l := range lowers {
		abs, e := checkDir("lowerdir", l)
		if e != nil {
			return nil, e
		}
		s.lowers = append(s.lowers, abs)
	}
	if s.upper != "" {
		if s.upper, err = checkDir("upperdir", s.upper); err != nil {
			return nil, err
		}
		if s.work, err = checkDir("workdir", s.work); err != nil {
			return nil, err
		}
		s.layers = append(s.layers, s.upper)
	}
	s.layers = append(s.layers, s.lowers...)
	return s, nil
}

func checkDir(what, p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("overlay: %s %q: %w", what, p, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("overlay: %s: %w", what, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("overlay: %s %q: not a directory", what, p)
	}
	return abs, nil
}

// Upper returns the upper layer dir, or "" for a read-only stack.
func (s *Stack) Upper() string { return s.upper }

// Work returns the work dir, or "" for a read-only stack.
func (s *Stack) Work() string { return s.work }

// Lowers returns the lower layer dirs, topmost first. Do not modify.
func (s *Stack) Lowers() []string { return s.lowers }

// Layers returns all layer dirs, the upper (if any) first. Layer indices
// used throughout this package index this slice. Do not modify.
func (s *Stack) Layers() []string { return s.layers }

// ReadOnly reports whether the stack has no upper layer.
func (s *Stack) ReadOnly() bool { return s.upper == "" }

// Format returns the encoding of overlay metadata in the stack's layers.
func (s *Stack) Format() Format { return s.format }

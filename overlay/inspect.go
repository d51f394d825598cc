package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// This file reads single layers and explains union lookups over a stack of
// them, in plain Go (lstat and the whiteout codecs of whiteout.go), for
// inspection tools such as `strata files` and `strata which`. It never
// mounts and never writes.

// LayerEntry is one entry of a single layer as it is stored on disk.
type LayerEntry struct {
	Path     string      // slash path from the layer root: "/a/b"
	Mode     fs.FileMode // type and permission bits
	Size     int64       // st_size
	Rdev     uint64      // device number of device nodes
	Whiteout bool        // deletes Path from lower layers (char 0/0 or xattr form)
	Opaque   bool        // a directory that hides lower contents (opaque="y")
	Redirect string      // redirect xattr of a renamed dir or metacopy file
	Metacopy bool        // metadata-only copy-up: data lives in a lower layer
	Target   string      // symlink target
}

// Kind names the entry's type as inspection tools print it: "file",
// "dir", "symlink", "whiteout", "opaque dir", "char", "block", "fifo",
// "socket".
func (e LayerEntry) Kind() string {
	switch {
	case e.Whiteout:
		return "whiteout"
	case e.Mode.IsDir() && e.Opaque:
		return "opaque dir"
	case e.Mode.IsDir():
		return "dir"
	case e.Mode&fs.ModeSymlink != 0:
		return "symlink"
	case e.Mode&fs.ModeCharDevice != 0:
		return "char"
	case e.Mode&fs.ModeDevice != 0:
		return "block"
	case e.Mode&fs.ModeNamedPipe != 0:
		return "fifo"
	case e.Mode&fs.ModeSocket != 0:
		return "socket"
	}
	return "file"
}

// cleanRel turns a user path into a clean layer-relative path ("" for the
// root). It fails with ErrInvalidPath for paths that climb above the root.
func cleanRel(p string) (string, error) {
	if strings.Contains("/"+p+"/", "/../") {
		return "", fmt.Errorf("path %q: %w", p, ErrInvalidPath)
	}
	c := path.Clean("/" + p)
	return strings.TrimPrefix(c, "/"), nil
}

// statEntry reads the entry rel of layer into a LayerEntry. parentX says
// whether rel's parent dir is marked opaque="x" (xattr whiteouts).
func (f Format) statEntry(layer, rel string, parentX bool) (LayerEntry, error) {
	p := filepath.Join(layer, filepath.FromSlash(rel))
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return LayerEntry{}, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return LayerEntry{}, err
	}
	e := LayerEntry{Path: "/" + rel, Mode: fi.Mode(), Size: st.Size, Rdev: uint64(st.Rdev)}
	if e.Whiteout = IsWhiteoutStat(&st); !e.Whiteout {
		if e.Whiteout, err = f.IsXattrWhiteout(p, &st, parentX); err != nil {
			return e, err
		}
	}
	switch {
	case e.Mode.IsDir():
		op, err := f.DirOpacity(p)
		if err != nil {
			return e, err
		}
		e.Opaque = op == Opaque
		if e.Redirect, _, err = f.Redirect(p); err != nil {
			return e, err
		}
	case e.Mode.IsRegular():
		if e.Metacopy, err = f.IsMetacopy(p); err != nil {
			return e, err
		}
		if e.Metacopy {
			if e.Redirect, _, err = f.Redirect(p); err != nil {
				return e, err
			}
		}
	case e.Mode&fs.ModeSymlink != 0:
		if e.Target, err = os.Readlink(p); err != nil {
			return e, err
		}
	}
	return e, nil
}

// isXDir reports whether the dir rel of layer is marked opaque="x".
func (f Format) isXDir(layer, rel string) bool {
	op, err := f.DirOpacity(filepath.Join(layer, filepath.FromSlash(rel)))
	return err == nil && op == HasXattrWhiteouts
}

// WalkLayer calls fn for every entry of the single layer dir at and below
// sub (a slash path; "" or "/" for the whole layer), parents before
// children, names in lexical order. Whiteouts, opaque dirs, redirects and
// metacopy files are marked in the entries. The root itself is reported
// only when it is opaque. A missing sub is an fs.ErrNotExist error.
func (f Format) WalkLayer(layer, sub string, fn func(LayerEntry) error) error {
	rel, err := cleanRel(sub)
	if err != nil {
		return err
	}
	start := filepath.Join(layer, filepath.FromSlash(rel))
	return filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, err := filepath.Rel(layer, p)
		if err != nil {
			return err
		}
		r = filepath.ToSlash(r)
		if r == "." {
			r = ""
		}
		e, err := f.statEntry(layer, r, r != "" && f.isXDir(layer, path.Dir(r)))
		if err != nil {
			return err
		}
		if r == "" && !e.Opaque {
			return nil
		}
		return fn(e)
	})
}

// Role is what one layer does for a path in a union lookup.
type Role string

const (
	RoleServes  Role = "serves"  // the entry the union shows (the topmost)
	RoleMerged  Role = "merged"  // a lower dir whose children show through
	RoleDeletes Role = "deletes" // a whiteout that deletes the path
	RoleHidden  Role = "hidden"  // an entry the union does not show
	RoleAbsent  Role = "absent"  // the layer has nothing at the path
)

// Step is one layer's part in resolving a path.
type Step struct {
	Layer int         // index in the stack, 0 = top
	Dir   string      // the layer's dir
	Entry *LayerEntry // nil when the layer has nothing at the path
	Role  Role
	Why   string // for RoleHidden: what hides it
}

// Resolution explains how a union of layers resolves one path.
type Resolution struct {
	Path   string // clean absolute path
	Found  bool   // the union shows the path
	Served int    // index of the serving layer, -1 when not found
	Steps  []Step // one per layer, top first
	Why    string // when not found: why
	// DataLayer serves the file data: Served, except for a metacopy
	// file (set by Stack.Explain only; -1 when not found).
	DataLayer int
}

// Explain explains the lookup of p in the stack: the verdict (found, the
// serving layer, the layer serving the data of a metacopy file) is
// Lookup's, which follows redirects and metacopy as the kernel does; the
// per-layer roles are Resolve's walk. Where a redirect makes the two
// differ, the serving layer is marked as serving and a note says why.
// Explain only reads.
func (s *Stack) Explain(p string) (*Resolution, error) {
	res, err := s.format.Resolve(s.layers, p)
	if err != nil {
		return nil, err
	}
	res.DataLayer = res.Served
	e, err := s.Lookup(p)
	switch {
	case err == nil:
		if !res.Found || res.Served != e.Layer {
			res.Why = fmt.Sprintf("served by layer %d through a redirect", e.Layer)
			for i := range res.Steps {
				if res.Steps[i].Layer == e.Layer {
					res.Steps[i].Role, res.Steps[i].Why = RoleServes, "through a redirect"
				}
			}
		}
		res.Found, res.Served, res.DataLayer = true, e.Layer, e.DataLayer
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENOTDIR):
		if res.Found {
			res.Why = "hidden by a redirect or whiteout that Lookup follows"
		}
		res.Found, res.Served, res.DataLayer = false, -1, -1
	default:
		return nil, err
	}
	return res, nil
}

// Resolve explains the lookup of p in the union of layers (top first), as
// kernel overlayfs does it: the topmost entry serves; a whiteout deletes
// the path from the layers below; a directory merges with the dirs below
// it until an opaque dir, a whiteout or a non-directory ends the merge;
// entries below that end are hidden. Redirects are reported in the
// entries but not followed. Resolve only reads.
func (f Format) Resolve(layers []string, p string) (*Resolution, error) {
	rel, err := cleanRel(p)
	if err != nil {
		return nil, err
	}
	res := &Resolution{Path: "/" + rel, Served: -1}
	// hiddenWhy[i] is set once layer i stops contributing to the walk.
	hiddenWhy := make([]string, len(layers))
	contrib := make([]int, 0, len(layers))
	for i := range layers {
		contrib = append(contrib, i)
	}
	// The root dirs merge until an opaque root.
	for k, i := range contrib {
		if op, err := f.DirOpacity(layers[i]); err != nil {
			return nil, err
		} else if op == Opaque {
			for _, j := range contrib[k+1:] {
				hiddenWhy[j] = fmt.Sprintf("below the opaque root of layer %d", i)
			}
			contrib = contrib[:k+1]
			break
		}
	}
	var comps []string
	if rel != "" {
		comps = strings.Split(rel, "/")
	}
	cur := ""
	for n, c := range comps {
		parent := cur
		cur = path.Join(cur, c)
		last := n == len(comps)-1
		var next []int
		served := -1
		var servedEntry *LayerEntry
		stopWhy := ""
		steps := map[int]Step{}
		for _, i := range contrib {
			e, err := f.statEntry(layers[i], cur, f.isXDir(layers[i], parent))
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			if err != nil {
				return nil, err
			}
			st := Step{Layer: i, Dir: layers[i], Entry: &e}
			switch {
			case stopWhy != "":
				st.Role, st.Why = RoleHidden, stopWhy
				hiddenWhy[i] = stopWhy
			case e.Whiteout:
				if served < 0 {
					st.Role = RoleDeletes
					stopWhy = fmt.Sprintf("deleted by the whiteout in layer %d", i)
				} else {
					st.Role, st.Why = RoleHidden, "a whiteout below the dir of layer "+fmt.Sprint(served)+" ends its merge"
					stopWhy = fmt.Sprintf("below the whiteout in layer %d", i)
				}
			case e.Mode.IsDir():
				if served < 0 {
					served, servedEntry, st.Role = i, &e, RoleServes
				} else if servedEntry.Mode.IsDir() {
					st.Role = RoleMerged
				}
				next = append(next, i)
				if e.Opaque {
					stopWhy = fmt.Sprintf("below the opaque dir in layer %d", i)
				}
			default:
				if served < 0 {
					served, servedEntry, st.Role = i, &e, RoleServes
					stopWhy = fmt.Sprintf("hidden by the %s in layer %d", e.Kind(), i)
				} else {
					st.Role, st.Why = RoleHidden, fmt.Sprintf("a %s below the dir of layer %d is not merged", e.Kind(), served)
					stopWhy = fmt.Sprintf("below the %s in layer %d", e.Kind(), i)
				}
			}
			steps[i] = st
		}
		if !last {
			if served < 0 || !servedEntry.Mode.IsDir() {
				res.Why = fmt.Sprintf("/%s is not a directory in the union", cur)
				if served < 0 {
					res.Why = fmt.Sprintf("/%s does not exist in the union", cur)
				}
				f.finishSteps(res, layers, rel, hiddenWhy)
				return res, nil
			}
			for _, i := range contrib {
				if st, ok := steps[i]; ok && st.Role == RoleHidden {
					continue
				}
				if !containsInt(next, i) && hiddenWhy[i] == "" && stopWhy != "" {
					hiddenWhy[i] = stopWhy
				}
			}
			contrib = next
			continue
		}
		// The last component.
		for i := range layers {
			if st, ok := steps[i]; ok {
				res.Steps = append(res.Steps, st)
				continue
			}
			res.Steps = append(res.Steps, f.offPathStep(layers, i, rel, hiddenWhy[i]))
		}
		if served >= 0 {
			res.Found, res.Served = true, served
		} else {
			res.Why = "no layer has it"
			for _, st := range res.Steps {
				if st.Role == RoleDeletes {
					res.Why = fmt.Sprintf("deleted by the whiteout in layer %d", st.Layer)
					break
				}
				if st.Role == RoleHidden {
					res.Why = "layer " + fmt.Sprint(st.Layer) + " has it, " + st.Why
					break
				}
			}
		}
		return res, nil
	}
	// The root itself.
	for i := range layers {
		e := LayerEntry{Path: "/", Mode: fs.ModeDir}
		st := Step{Layer: i, Dir: layers[i], Entry: &e, Role: RoleMerged}
		if i == 0 {
			st.Role = RoleServes
		}
		if hiddenWhy[i] != "" {
			st.Role, st.Why = RoleHidden, hiddenWhy[i]
		}
		res.Steps = append(res.Steps, st)
	}
	res.Found, res.Served = true, 0
	return res, nil
}

// finishSteps fills res.Steps for a lookup that ended early.
func (f Format) finishSteps(res *Resolution, layers []string, rel string, hiddenWhy []string) {
	for i := range layers {
		res.Steps = append(res.Steps, f.offPathStep(layers, i, rel, hiddenWhy[i]))
	}
}

// offPathStep describes layer i, which the walk did not reach for rel:
// absent, or present but hidden (why).
func (f Format) offPathStep(layers []string, i int, rel, why string) Step {
	st := Step{Layer: i, Dir: layers[i], Role: RoleAbsent}
	e, err := f.statEntry(layers[i], rel, f.isXDir(layers[i], path.Dir(rel)))
	if err != nil {
		return st
	}
	st.Entry = &e
	st.Role, st.Why = RoleHidden, why
	if why == "" {
		st.Why = "a parent dir is hidden"
	}
	return st
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

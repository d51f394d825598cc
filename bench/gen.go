package bench

import (
	"archive/tar"
	"bufio"
	"fmt"
	"hash/crc32"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/stratafs/strata/overlay"
	"golang.org/x/sys/unix"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// BlockSize is the unit of random reads and of the large file's per-block
// checksums.
const BlockSize = 4096

// Spec fixes the shape of a generated layer set. The same Spec and Seed
// always give the same names, sizes and contents.
type Spec struct {
	Seed          uint64 `json:"seed"`
	Layers        int    `json:"layers"`          // main stack depth, >= WideLayers+1
	FilesPerLayer int    `json:"files_per_layer"` // files under tree/ per main layer
	MeanFileSize  int    `json:"mean_file_size"`  // bytes, exponential distribution
	MaxFileSize   int    `json:"max_file_size"`
	LargeSize     int64  `json:"large_size"`   // big/large.bin in the bottom layer
	WideEntries   int    `json:"wide_entries"` // visible names of wide/
	WideLayers    int    `json:"wide_layers"`  // wide/ is spread over the top WideLayers layers
	StatDepths    []int  `json:"stat_depths"`  // layer depths of the stat stacks
	StatTargets   int    `json:"stat_targets"` // existing (and as many missing) stat names
	TarFiles      int    `json:"tar_files"`    // small files in the untar tarball
	CreateFiles   int    `json:"create_files"` // files created by the create workload
	RandReads     int    `json:"rand_reads"`   // 4 KiB random reads of the large file
	GitFiles      int    `json:"git_files"`    // files of the git repository (0: none)
}

// FullSpec is the full-size layer set (about 1.5 GiB on disk).
func FullSpec(seed uint64) Spec {
	return Spec{
		Seed: seed, Layers: 10, FilesPerLayer: 1000, MeanFileSize: 8 << 10, MaxFileSize: 256 << 10,
		LargeSize: 1 << 30, WideEntries: 10000, WideLayers: 8, StatDepths: []int{1, 8, 32, 128},
		StatTargets: 5000, TarFiles: 50000, CreateFiles: 10000, RandReads: 20000, GitFiles: 5000,
	}
}

// QuickSpec is a small layer set for a run of a few minutes.
func QuickSpec(seed uint64) Spec {
	return Spec{
		Seed: seed, Layers: 10, FilesPerLayer: 100, MeanFileSize: 8 << 10, MaxFileSize: 128 << 10,
		LargeSize: 64 << 20, WideEntries: 2000, WideLayers: 8, StatDepths: []int{1, 8, 32, 128},
		StatTargets: 500, TarFiles: 2000, CreateFiles: 1000, RandReads: 2000, GitFiles: 500,
	}
}

func (s Spec) validate() error {
	switch {
	case s.WideLayers < 1 || s.Layers < s.WideLayers+1:
		return fmt.Errorf("spec: need layers (%d) >= wide layers (%d) + 1", s.Layers, s.WideLayers)
	case s.Layers < 3:
		return fmt.Errorf("spec: need at least 3 layers, have %d", s.Layers)
	case s.LargeSize < BlockSize || s.LargeSize%BlockSize != 0:
		return fmt.Errorf("spec: large size %d must be a positive multiple of %d", s.LargeSize, BlockSize)
	case s.FilesPerLayer < 20 || s.WideEntries < 100 || s.StatTargets < 1 || s.TarFiles < 1 || s.CreateFiles < 1 || s.RandReads < 1:
		return fmt.Errorf("spec: counts too small: %+v", s)
	case s.GitFiles != 0 && s.GitFiles < 20:
		return fmt.Errorf("spec: git files %d: want 0 (no repository) or at least 20", s.GitFiles)
	case s.MeanFileSize < 1 || s.MaxFileSize < s.MeanFileSize:
		return fmt.Errorf("spec: bad file sizes mean %d max %d", s.MeanFileSize, s.MaxFileSize)
	}
	for _, d := range s.StatDepths {
		if d < 1 || d > overlay.MaxKernelLowers {
			return fmt.Errorf("spec: stat depth %d out of range 1..%d", d, overlay.MaxKernelLowers)
		}
	}
	return nil
}

// EstimateBytes returns a generous estimate of the disk space a run needs:
// the layer set plus the peak of a run (a flattened copy for the native
// baseline, a copied native upper, a full copy-up of the large file and an
// extracted tarball).
func (s Spec) EstimateBytes() int64 {
	const blk = 4096
	small := int64(s.MeanFileSize) + blk
	tree := int64(s.Layers*s.FilesPerLayer) * small
	wide := int64(s.WideEntries) * 12 / 10 * blk
	main := s.LargeSize + tree + wide
	maxDepth := 1
	for _, d := range s.StatDepths {
		maxDepth = max(maxDepth, d)
	}
	stat := int64(s.StatTargets)*blk + int64(maxDepth)*16*blk
	tarball := int64(s.TarFiles) * (512 + 1024 + 512)
	untar := int64(s.TarFiles) * (blk + 1024)
	create := int64(s.CreateFiles) * blk
	// Work tree, loose objects, the upper layer and a flattened copy.
	git := int64(s.GitFiles) * 4 * (blk + 2048)
	gen := main + stat + tarball + git
	run := 2*main + s.LargeSize + untar + create
	return gen + run + 1<<30
}

// FitSpec checks the free space of the filesystem holding dir against
// s.EstimateBytes. When space is short it halves the large file (not below
// 64 MiB) and says so in note; when even that does not fit it fails with
// ErrNoSpace. It never fills the disk on purpose.
func FitSpec(s Spec, dir string) (fitted Spec, note string, err error) {
	return fitSpec(s, dir, Spec.EstimateBytes, "the layer set and run need")
}

// fitSpec is FitSpec with need giving the bytes a spec needs on dir
// (what names them in the error).
func fitSpec(s Spec, dir string, need func(Spec) int64, what string) (fitted Spec, note string, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return s, "", fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	orig := s.LargeSize
	for need(s) > free && s.LargeSize > 64<<20 {
		s.LargeSize /= 2
	}
	if need := need(s); need > free {
		return s, "", fmt.Errorf("bench: %s has %d MiB free, %s about %d MiB: %w",
			dir, free>>20, what, need>>20, ErrNoSpace)
	}
	if s.LargeSize != orig {
		note = fmt.Sprintf("large file scaled down from %d MiB to %d MiB: %s has only %d MiB free",
			orig>>20, s.LargeSize>>20, dir, free>>20)
	}
	return s, note, nil
}

// Entry is one object of the merged view of the main stack.
type Entry struct {
	Dir  bool   `json:"dir,omitempty"`
	Size int64  `json:"size"`
	CRC  uint32 `json:"crc"` // CRC-32C of the content
}

// LayerSet is a generated set of layers and what their union must show.
type LayerSet struct {
	Spec Spec
	Root string
	// Main is the main stack, topmost first.
	Main []string
	// Manifest is the merged view of Main: slash path relative to the
	// union root -> entry (dirs included, the root excluded).
	Manifest map[string]Entry
	// WideNames are the sorted names of wide/ in the merged view.
	WideNames []string
	// Whiteouts lists, per main layer (index 0 = bottom), the relative
	// paths of the whiteouts it holds.
	Whiteouts [][]string
	// OpaqueDir is the opaque directory's relative path; OpaqueLayer the
	// index (0 = bottom) of the layer that marks it opaque.
	OpaqueDir   string
	OpaqueLayer int
	// Large is the large file's relative path in Main.
	Large         string
	LargeCRC      uint32
	LargeBlockCRC []uint32
	// Deep maps a stat depth to its stack (topmost first).
	Deep map[int][]string
	// StatHit and StatMiss are relative paths in every Deep stack;
	// StatHitSize gives each hit's size.
	StatHit     []string
	StatHitSize []int64
	StatMiss    []string
	// Tarball is a GNU tar of small files; TarEntries counts the files
	// and dirs it holds, TarBytes the file bytes.
	Tarball  string
	TarFiles int
	TarDirs  int
	TarBytes int64
	// Git is the git stack (topmost first): a bottom layer with a
	// committed repository repo/ and a layer that modifies, deletes (by
	// whiteouts) and adds a few files. GitStatus is the exact output of
	// `git status --porcelain` in its union. Git is nil when the spec has
	// no repository or git is not installed (GitSkipped says why).
	Git        []string
	GitStatus  string
	GitSkipped string
}

type generator struct {
	rng    *rand.Rand
	ls     *LayerSet
	merged map[string]Entry
	buf    []byte
}

// Generate writes the layer set of spec under root, which must not exist
// or be empty. Check space first with FitSpec.
func Generate(root string, spec Spec) (*LayerSet, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(root); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("generate: %s is not empty", root)
	}
	ls := &LayerSet{Spec: spec, Root: root, Deep: map[int][]string{}}
	g := &generator{
		rng:    rand.New(rand.NewPCG(spec.Seed, 0x5354524154410001)),
		ls:     ls,
		merged: map[string]Entry{},
		buf:    make([]byte, max(spec.MaxFileSize, 1<<20)),
	}
	if err := g.main(); err != nil {
		return nil, fmt.Errorf("generate main stack in %s: %w", root, err)
	}
	if err := g.deep(); err != nil {
		return nil, fmt.Errorf("generate stat stacks in %s: %w", root, err)
	}
	if err := g.tarball(); err != nil {
		return nil, fmt.Errorf("generate tarball in %s: %w", root, err)
	}
	if err := g.git(); err != nil {
		return nil, fmt.Errorf("generate git repository in %s: %w", root, err)
	}
	// The layers are immutable from here on, like committed layers: give
	// each its name index next to it, as the snapshotter does at commit.
	for _, l := range ls.Layers() {
		if err := overlay.WriteIndexFile(l, overlay.IndexPath(l)); err != nil {
			return nil, fmt.Errorf("generate: index of %s: %w", l, err)
		}
	}
	return ls, nil
}

// Layers returns every generated layer dir once: the main stack, the stat
// stacks' layers, then the git stack.
func (ls *LayerSet) Layers() []string {
	var out []string
	seen := map[string]bool{}
	add := func(layers []string) {
		for _, l := range layers {
			if !seen[l] {
				seen[l] = true
				out = append(out, l)
			}
		}
	}
	add(ls.Main)
	depths := slices.Sorted(maps.Keys(ls.Deep))
	for _, d := range depths {
		add(ls.Deep[d])
	}
	add(ls.Git)
	return out
}

func (g *generator) fileSize() int {
	s := int(g.rng.ExpFloat64() * float64(g.ls.Spec.MeanFileSize))
	return min(s, g.ls.Spec.MaxFileSize)
}

// content fills and returns n pseudo-random bytes.
func (g *generator) content(n int) []byte {
	b := g.buf[:n]
	for i := 0; i < n; i += 8 {
		v := g.rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// addDirs records the parents of rel as dirs of the merged view.
func (g *generator) addDirs(rel string) {
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		g.merged[d] = Entry{Dir: true}
	}
}

func (g *generator) writeFile(layer, rel string, size int) error {
	p := filepath.Join(layer, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	data := g.content(size)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return err
	}
	g.addDirs(rel)
	g.merged[rel] = Entry{Size: int64(size), CRC: crc32.Checksum(data, castagnoli)}
	return nil
}

// removeTree drops rel and everything below it from the merged view.
func (g *generator) removeTree(rel string) {
	delete(g.merged, rel)
	pre := rel + "/"
	for k := range g.merged {
		if strings.HasPrefix(k, pre) {
			delete(g.merged, k)
		}
	}
}

func (g *generator) whiteout(li int, layer, rel string) error {
	dir := filepath.Join(layer, path.Dir(rel))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := overlay.MakeWhiteout(dir, path.Base(rel)); err != nil {
		return err
	}
	g.removeTree(rel)
	g.ls.Whiteouts[li] = append(g.ls.Whiteouts[li], rel)
	return nil
}

type wideAction struct {
	name     string
	whiteout bool
}

func (g *generator) planWide() map[int][]wideAction {
	s := g.ls.Spec
	lo, hi := s.Layers-s.WideLayers, s.Layers-1
	plan := map[int][]wideAction{}
	add := func(li int, a wideAction) { plan[li] = append(plan[li], a) }
	for i := 0; i < s.WideEntries; i++ {
		name := fmt.Sprintf("w%05d", i)
		top := lo + g.rng.IntN(hi-lo+1)
		if top > lo && g.rng.IntN(20) == 0 { // overridden by a higher layer
			add(lo+g.rng.IntN(top-lo), wideAction{name: name})
		}
		add(top, wideAction{name: name})
	}
	for i := 0; i < s.WideEntries/50; i++ { // hidden by a whiteout above
		name := fmt.Sprintf("h%05d", i)
		a := lo + g.rng.IntN(hi-lo)
		add(a, wideAction{name: name})
		add(a+1+g.rng.IntN(hi-a), wideAction{name: name, whiteout: true})
	}
	return plan
}

func (g *generator) main() error {
	s := g.ls.Spec
	g.ls.Whiteouts = make([][]string, s.Layers)
	g.ls.OpaqueDir = "opq"
	g.ls.OpaqueLayer = s.Layers / 2
	g.ls.Large = "big/large.bin"
	wide := g.planWide()
	goneLayer := 2
	for li := 0; li < s.Layers; li++ {
		layer := filepath.Join(g.ls.Root, "m", fmt.Sprint(li))
		if err := os.MkdirAll(layer, 0o755); err != nil {
			return err
		}
		g.ls.Main = append([]string{layer}, g.ls.Main...)
		if li == 0 {
			if err := g.large(layer); err != nil {
				return err
			}
			for i := 0; i < 50; i++ {
				if err := g.writeFile(layer, fmt.Sprintf("tree/gone/g%03d", i), g.fileSize()); err != nil {
					return err
				}
			}
		}
		if li == goneLayer {
			if err := g.whiteout(li, layer, "tree/gone"); err != nil {
				return err
			}
		}
		// Whiteouts of files of lower layers, chosen before this layer
		// writes its own files so that the two never collide.
		if li > 0 {
			var cands []string
			for k, e := range g.merged {
				if !e.Dir && strings.HasPrefix(k, "tree/d") {
					cands = append(cands, k)
				}
			}
			sort.Strings(cands)
			for i := 0; i < s.FilesPerLayer/20 && len(cands) > 0; i++ {
				j := g.rng.IntN(len(cands))
				if err := g.whiteout(li, layer, cands[j]); err != nil {
					return err
				}
				cands = append(cands[:j], cands[j+1:]...)
			}
		}
		wrote := map[string]bool{}
		for i := 0; i < s.FilesPerLayer; i++ {
			rel := fmt.Sprintf("tree/d%02d/f%05d", g.rng.IntN(32), g.rng.IntN(2*s.FilesPerLayer))
			if wrote[rel] || contains(g.ls.Whiteouts[li], rel) {
				continue
			}
			wrote[rel] = true
			if err := g.writeFile(layer, rel, g.fileSize()); err != nil {
				return err
			}
		}
		switch {
		case li < 2:
			for i := 0; i < 20; i++ {
				if err := g.writeFile(layer, fmt.Sprintf("opq/o%03d-%d", i, li), g.fileSize()); err != nil {
					return err
				}
			}
		case li == g.ls.OpaqueLayer:
			dir := filepath.Join(layer, g.ls.OpaqueDir)
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			if err := (overlay.Format{}).SetOpaque(dir); err != nil {
				return err
			}
			g.removeTree(g.ls.OpaqueDir)
			g.merged[g.ls.OpaqueDir] = Entry{Dir: true}
			for i := 0; i < 10; i++ {
				if err := g.writeFile(layer, fmt.Sprintf("opq/n%03d", i), g.fileSize()); err != nil {
					return err
				}
			}
		}
		for _, a := range wide[li] {
			rel := "wide/" + a.name
			var err error
			if a.whiteout {
				err = g.whiteout(li, layer, rel)
			} else {
				err = g.writeFile(layer, rel, g.rng.IntN(512))
			}
			if err != nil {
				return err
			}
		}
	}
	g.ls.Manifest = g.merged
	for k := range g.merged {
		if strings.HasPrefix(k, "wide/") {
			g.ls.WideNames = append(g.ls.WideNames, path.Base(k))
		}
	}
	sort.Strings(g.ls.WideNames)
	if len(g.ls.WideNames) != s.WideEntries {
		return fmt.Errorf("wide dir has %d names, want %d", len(g.ls.WideNames), s.WideEntries)
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// large writes the large file from a ChaCha8 stream keyed by the seed and
// records its CRC-32C, whole and per 4 KiB block.
func (g *generator) large(layer string) error {
	s := g.ls.Spec
	p := filepath.Join(layer, g.ls.Large)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	var key [32]byte
	for i := range 4 {
		v := g.rng.Uint64()
		for j := range 8 {
			key[i*8+j] = byte(v >> (8 * j))
		}
	}
	src := rand.NewChaCha8(key)
	buf := make([]byte, 1<<20)
	var whole uint32
	blocks := make([]uint32, 0, s.LargeSize/BlockSize)
	for left := s.LargeSize; left > 0; {
		n := int(min(left, int64(len(buf))))
		_, _ = src.Read(buf[:n])
		whole = crc32.Update(whole, castagnoli, buf[:n])
		for o := 0; o < n; o += BlockSize {
			blocks = append(blocks, crc32.Checksum(buf[o:o+BlockSize], castagnoli))
		}
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", p, err)
		}
		left -= int64(n)
	}
	if err := f.Close(); err != nil {
		return err
	}
	g.addDirs(g.ls.Large)
	g.merged[g.ls.Large] = Entry{Size: s.LargeSize, CRC: whole}
	g.ls.LargeCRC, g.ls.LargeBlockCRC = whole, blocks
	return nil
}

const statDirs = 16

// deep writes the stat stacks: a base layer with the targets and, above
// it, filler layers that each hold one file in every target dir, so that a
// lookup descends through a real dir in every layer.
func (g *generator) deep() error {
	s := g.ls.Spec
	base := filepath.Join(g.ls.Root, "s", "b")
	for i := 0; i < s.StatTargets; i++ {
		rel := fmt.Sprintf("p%02d/t%05d", i%statDirs, i)
		size := 64 + i%64
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, g.content(size), 0o644); err != nil {
			return err
		}
		g.ls.StatHit = append(g.ls.StatHit, rel)
		g.ls.StatHitSize = append(g.ls.StatHitSize, int64(size))
		g.ls.StatMiss = append(g.ls.StatMiss, fmt.Sprintf("p%02d/m%05d", i%statDirs, i))
	}
	maxDepth := 1
	for _, d := range s.StatDepths {
		maxDepth = max(maxDepth, d)
	}
	var fillers []string // bottom first
	for k := 0; k < maxDepth-1; k++ {
		layer := filepath.Join(g.ls.Root, "s", fmt.Sprint(k))
		for d := 0; d < statDirs; d++ {
			p := filepath.Join(layer, fmt.Sprintf("p%02d", d), fmt.Sprintf("x%03d", k))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte("filler\n"), 0o644); err != nil {
				return err
			}
		}
		fillers = append(fillers, layer)
	}
	for _, d := range s.StatDepths {
		var st []string
		for k := d - 2; k >= 0; k-- {
			st = append(st, fillers[k])
		}
		g.ls.Deep[d] = append(st, base)
	}
	return nil
}

func (g *generator) tarball() error {
	s := g.ls.Spec
	g.ls.Tarball = filepath.Join(g.ls.Root, "untar.tar")
	f, err := os.OpenFile(g.ls.Tarball, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	hdr := func(h *tar.Header) error {
		h.Format, h.Uid, h.Gid, h.ModTime = tar.FormatGNU, 0, 0, fixedTime
		return tw.WriteHeader(h)
	}
	if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: "u/", Mode: 0o755}); err != nil {
		return err
	}
	g.ls.TarDirs = 1
	const perDir = 500
	for i := 0; i < s.TarFiles; i++ {
		if i%perDir == 0 {
			if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("u/d%03d/", i/perDir), Mode: 0o755}); err != nil {
				return err
			}
			g.ls.TarDirs++
		}
		size := g.rng.IntN(2048)
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("u/d%03d/f%05d", i/perDir, i), Mode: 0o644, Size: int64(size)}); err != nil {
			return err
		}
		if _, err := tw.Write(g.content(size)); err != nil {
			return err
		}
		g.ls.TarBytes += int64(size)
	}
	g.ls.TarFiles = s.TarFiles
	if err := tw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// fixedTime is the mtime of every tarball entry, for reproducible bytes.
var fixedTime = time.Unix(1700000000, 0)

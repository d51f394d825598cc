package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stratafs/strata/overlay"
)

// gitEnv is the environment of every git command the harness runs: no
// system or user configuration, a fixed identity and fixed dates (so the
// same seed gives the same commit), no optional locks (a status on a
// read-only union must not try to refresh the index).
func gitEnv() []string {
	env := []string{
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME=/nonexistent", "LC_ALL=C",
		"GIT_AUTHOR_NAME=strata-bench", "GIT_AUTHOR_EMAIL=bench@strata.invalid", "GIT_AUTHOR_DATE=1700000000 +0000",
		"GIT_COMMITTER_NAME=strata-bench", "GIT_COMMITTER_EMAIL=bench@strata.invalid", "GIT_COMMITTER_DATE=1700000000 +0000",
		"GIT_OPTIONAL_LOCKS=0",
	}
	if p := os.Getenv("PATH"); p != "" {
		env = append(env, "PATH="+p)
	}
	return env
}

func runGit(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...) //nolint:gosec // fixed tool; the harness's own dirs and arguments
	cmd.Env = gitEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// git writes the git stack: in the bottom layer a repository repo/ with
// GitFiles files in nested dirs, committed; above it a layer that rewrites
// about 1 % of the files, whites out as many and adds two untracked files.
// It records the exact `git status --porcelain` the union must give.
func (g *generator) git() error {
	s := g.ls.Spec
	if s.GitFiles == 0 {
		return nil
	}
	if _, err := exec.LookPath("git"); err != nil {
		g.ls.GitSkipped = "git not installed"
		return nil
	}
	base := filepath.Join(g.ls.Root, "g", "0")
	top := filepath.Join(g.ls.Root, "g", "1")
	repo := filepath.Join(base, "repo")
	// Nested dirs: src/aNN/bN/, 20 files per leaf dir on average.
	leaves := max(1, s.GitFiles/20)
	var files []string
	for i := 0; i < s.GitFiles; i++ {
		leaf := g.rng.IntN(leaves)
		rel := fmt.Sprintf("src/a%02d/b%d/f%05d.txt", leaf/8, leaf%8, i)
		p := filepath.Join(repo, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, g.text(64+g.rng.IntN(4096)), 0o644); err != nil {
			return err
		}
		files = append(files, rel)
	}
	if err := os.WriteFile(filepath.Join(repo, "README"), []byte("strata-bench git-status repository\n"), 0o644); err != nil {
		return err
	}
	// Files older than the index git writes: otherwise they are "racily
	// clean" (mtime not before the index's) and git re-reads every one of
	// them on every status. The index then matches a union that shows the
	// lower files' own stat data (inode, mtime, ctime, size).
	for _, rel := range append(files, "README") {
		if err := os.Chtimes(filepath.Join(repo, rel), fixedTime, fixedTime); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"-c", "init.defaultBranch=main", "init", "-q", "--template="},
		{"add", "-A"},
		{"commit", "-q", "-m", "strata-bench git-status repository"},
	} {
		if _, err := runGit(repo, args...); err != nil {
			return err
		}
	}
	// The upper-ish layer: pick distinct files to modify and to delete.
	n := max(3, s.GitFiles/100)
	perm := g.rng.Perm(len(files))
	var lines []string
	for k, i := range perm[:2*n] {
		rel := files[i]
		p := filepath.Join(top, "repo", rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if k < n {
			if err := os.WriteFile(p, g.text(64+g.rng.IntN(4096)), 0o644); err != nil {
				return err
			}
			lines = append(lines, " M "+rel)
			continue
		}
		if err := overlay.MakeWhiteout(filepath.Dir(p), path.Base(rel)); err != nil {
			return err
		}
		lines = append(lines, " D "+rel)
	}
	// Porcelain v1 lists tracked changes by path, then untracked files.
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[3:], b[3:]) })
	for k := 0; k < 2; k++ {
		rel := path.Join(path.Dir(files[perm[2*n+k]]), fmt.Sprintf("untracked-%d.txt", k))
		p := filepath.Join(top, "repo", rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, g.text(100), 0o644); err != nil {
			return err
		}
		lines = append(lines, "?? "+rel)
	}
	slices.Sort(lines[2*n:])
	g.ls.Git = []string{top, base}
	g.ls.GitStatus = strings.Join(lines, "\n") + "\n"
	return nil
}

// text returns n bytes of pseudo-random printable lines.
func (g *generator) text(n int) []byte {
	b := g.content(n)
	for i := range b {
		if i%64 == 63 {
			b[i] = '\n'
		} else {
			b[i] = 'a' + b[i]%26
		}
	}
	return b
}

// gitRefresh makes the repository in a flattened copy of the git stack
// (native's) look like a checkout: a copy has new inode numbers, ctimes
// and mtimes, so git would re-read every file on every status. It dates
// the work tree's files back (as generated: not racily clean) and
// refreshes the index.
func gitRefresh(_ *LayerSet, flat string) error {
	repo := filepath.Join(flat, "repo")
	err := filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && d.Name() == ".git":
			return filepath.SkipDir
		case d.Type().IsRegular():
			return os.Chtimes(p, fixedTime, fixedTime) //nolint:gosec // the harness's own flattened copy
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = runGit(repo, "update-index", "-q", "--refresh")
	return err
}

// gitStatus runs `git status --porcelain` in the union's repo/ (no
// optional locks: the union is read-only) and checks its exact output.
func gitStatus(ls *LayerSet, root string, env Env) (time.Duration, error) {
	if env.Git == "" {
		return 0, errors.New("git-status: git not installed")
	}
	dir := filepath.Join(root, "repo")
	cmd := exec.Command(env.Git, "--no-optional-locks", "-C", dir, "status", "--porcelain") //nolint:gosec // git from PATH; the harness's own mount
	cmd.Env = gitEnv()
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, wrong("git status in %s: %v: %s", dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if got := out.String(); got != ls.GitStatus {
		return 0, wrong("git status in %s: %d lines, want %d (%s)", dir, strings.Count(got, "\n"), strings.Count(ls.GitStatus, "\n"),
			firstDiff(strings.Split(got, "\n"), strings.Split(ls.GitStatus, "\n")))
	}
	return d, nil
}

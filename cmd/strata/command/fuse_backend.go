package command

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/fuse"
	"github.com/stratafs/strata/overlay"
)

// The FUSE backend runs strata's FUSE server (package fuse) for a stack.
//
// A FUSE mount lives only as long as its server process, so a detached
// mount (the default, as fuse-overlayfs does) re-executes strata as
// `strata mount --backend fuse --foreground --log FILE -o ... TARGET` in a
// new session, with the write end of a pipe as fd 3 (readyFDEnv names it).
// The server writes "ok\n" there once the kernel has the mount, or the
// error that stopped it, and closes it; the parent returns (and `strata
// mount` exits 0) only after "ok". A server that dies before writing
// anything is reported with its exit status and its log file.
//
// The server unmounts on SIGTERM, SIGINT and SIGHUP and exits when the
// mount is gone (`strata umount TARGET`, umount(8), or its last bind mount
// dropped).
//
// Mounting needs no fusermount as root (mount(2) directly). go-fuse falls
// back to fusermount3 (or fusermount) from $PATH when mount(2) is refused,
// which is what happens without privilege (the user needs access to
// /dev/fuse); allow_other is then dropped unless /etc/fuse.conf has
// user_allow_other, and unmounting goes through fusermount3 -u.

func init() { backends["fuse"] = fuseBackend{} }

// readyFDEnv names the fd of the readiness pipe in a detached server.
const readyFDEnv = "STRATA_FUSE_READY_FD"

// DefaultLogDir is where detached FUSE servers log unless --log or
// $STRATA_LOG_DIR (LogDirEnv) says otherwise.
const DefaultLogDir = "/run/strata"

// LogDirEnv overrides DefaultLogDir.
const LogDirEnv = "STRATA_LOG_DIR"

type fuseBackend struct{}

func (fuseBackend) Name() string { return "fuse" }

// Mount serves r.Stack on r.Target: in this process until unmounted with
// r.Foreground, else in a detached server process, returning once the
// mount is live.
func (b fuseBackend) Mount(r MountRequest) error {
	if r.Foreground {
		return serveFUSE(r)
	}
	return b.spawn(r)
}

// Unmount unmounts a FUSE mount; its server then exits. Without privilege
// for umount(2) it asks fusermount3 (or fusermount).
func (fuseBackend) Unmount(target string) error {
	err := unix.Unmount(target, 0)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EPERM) {
		for _, prog := range []string{"fusermount3", "fusermount"} {
			if path, lerr := exec.LookPath(prog); lerr == nil {
				out, ferr := exec.Command(path, "-u", target).CombinedOutput() //nolint:gosec // fusermount from PATH
				if ferr != nil {
					return fmt.Errorf("unmount %s: %s -u: %w: %s", target, prog, ferr, strings.TrimSpace(string(out)))
				}
				return nil
			}
		}
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}

// fuseMountOptions is the -o list that reproduces the stack and options
// of r for a server process.
func fuseMountOptions(r MountRequest) string {
	esc := func(p string) string { return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(p) }
	var lowers []string
	for _, l := range r.Stack.Lowers() {
		lowers = append(lowers, esc(l))
	}
	opts := []string{"lowerdir=" + strings.Join(lowers, ":")}
	if r.Stack.Upper() != "" {
		opts = append(opts, "upperdir="+r.Stack.Upper(), "workdir="+r.Stack.Work())
	}
	if r.Options.ReadOnly {
		opts = append(opts, "ro")
	}
	if r.Options.Volatile && r.Stack.Upper() != "" {
		opts = append(opts, "volatile")
	}
	if r.Stack.Format().UserXattr {
		opts = append(opts, "userxattr")
	}
	return strings.Join(opts, ",")
}

// defaultLogFile is the log of a detached server for target when --log is
// not given: /run/strata/fuse-<target with '/' as '-'>.log (or in
// $STRATA_LOG_DIR).
func defaultLogFile(target string) string {
	name := strings.ReplaceAll(strings.Trim(target, "/"), "/", "-")
	if len(name) > 200 {
		name = name[len(name)-200:]
	}
	dir := DefaultLogDir
	if v := os.Getenv(LogDirEnv); v != "" {
		dir = v
	}
	return filepath.Join(dir, "fuse-"+name+".log")
}

// spawn starts a detached server for r and waits until it reports.
func (fuseBackend) spawn(r MountRequest) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("fuse: find own executable: %w", err)
	}
	for _, p := range append([]string{r.Target, r.Stack.Upper(), r.Stack.Work()}, r.Stack.Lowers()...) {
		if strings.Contains(p, ",") {
			return usagef("fuse: path %q has a ',', which -o cannot carry to the server", p)
		}
	}
	logFile := r.LogFile
	if logFile == "" {
		logFile = defaultLogFile(r.Target)
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return fmt.Errorf("fuse: log dir: %w", err)
	}
	lf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("fuse: log: %w", err)
	}
	defer func() { _ = lf.Close() }() // never written here: the server has its own copy
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("fuse: pipe: %w", err)
	}
	defer func() { _ = pr.Close() }() // read-only
	args := []string{"mount", "--backend", "fuse", "--foreground", "--log", logFile}
	if r.VFSFlags != 0 {
		args = append(args, "--vfs-flags", vfsFlagNames(r.VFSFlags))
	}
	args = append(args, "-o", fuseMountOptions(r), "--", r.Target)
	r.Debugf("fuse: starting server: %s %s (log %s)", exe, strings.Join(args, " "), logFile)
	cmd := exec.Command(exe, args...) //nolint:gosec // this very executable
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.Stdout, cmd.Stderr = lf, lf // panics and early errors land in the log
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		_ = pw.Close() // never written here
		return fmt.Errorf("fuse: start server: %w", err)
	}
	_ = pw.Close() // never written here; closing it lets pr see EOF
	msg, _ := io.ReadAll(io.LimitReader(pr, 64<<10))
	if string(msg) == "ok\n" {
		// The server lives on; reap it if this process outlives it.
		go func() { _ = cmd.Wait() }()
		r.Debugf("fuse: server pid %d is serving %s", cmd.Process.Pid, r.Target)
		return nil
	}
	werr := cmd.Wait()
	if m := strings.TrimSpace(string(msg)); m != "" {
		code, text := ExitFailure, m
		if c, t, ok := strings.Cut(strings.TrimPrefix(m, "error "), " "); ok && strings.HasPrefix(m, "error ") {
			if n, err := strconv.Atoi(c); err == nil {
				code, text = n, t
			}
		}
		return exitCoded{fmt.Errorf("fuse server: %s (log: %s)", text, logFile), code}
	}
	return fmt.Errorf("fuse server exited before the mount was live (%v); see %s", werr, logFile)
}

// serveFUSE mounts r.Stack on r.Target and serves it until the mount goes
// away or a signal asks to unmount. With readyFDEnv set it reports to the
// process that started it.
func serveFUSE(r MountRequest) (err error) {
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	if r.LogFile != "" {
		f, ferr := os.OpenFile(r.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if ferr != nil {
			return fmt.Errorf("log %s: %w", r.LogFile, ferr)
		}
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("log %s: %w", r.LogFile, cerr)
			}
		}()
		logger.SetOutput(f)
	}
	logger.SetPrefix(fmt.Sprintf("strata-fuse[%d] %s: ", os.Getpid(), r.Target))

	stack := r.Stack
	if r.Options.ReadOnly && stack.Upper() != "" {
		// ro over an upper dir: serve the upper as the topmost lower.
		sopts := []overlay.StackOption{overlay.WithSiblingIndexFiles()}
		if stack.Format().UserXattr {
			sopts = append(sopts, overlay.WithUserXattr())
		}
		if stack, err = overlay.NewStack(append([]string{stack.Upper()}, stack.Lowers()...), sopts...); err != nil {
			return err
		}
	}
	if len(r.Options.Extra) > 0 {
		r.Debugf("fuse: ignoring kernel-only options %s", strings.Join(r.Options.Extra, ","))
	}
	if stack.Work() != "" {
		// One server per upper dir, as the kernel allows one overlay
		// mount per upper dir: an exclusive flock on the work dir, held
		// until this process exits.
		wf, err := os.Open(stack.Work())
		if err != nil {
			return err
		}
		defer func() { _ = wf.Close() }() // read-only; closing drops the flock
		if err := unix.Flock(int(wf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			if errors.Is(err, unix.EWOULDBLOCK) {
				return fmt.Errorf("upperdir %q: %w (another strata FUSE server serves it)", stack.Upper(), overlay.ErrInUse)
			}
			return fmt.Errorf("lock workdir %q: %w", stack.Work(), err)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// Without privilege go-fuse mounts through fusermount3, which allows
	// allow_other only with user_allow_other in /etc/fuse.conf.
	private := os.Geteuid() != 0 && !userAllowOther()
	if private {
		logger.Printf("not root and no user_allow_other in /etc/fuse.conf: mounting without allow_other (only uid %d can access)", os.Geteuid())
	}
	srv, err := fuse.Mount(stack, r.Target, fuse.Options{
		Private:    private,
		Volatile:   r.Options.Volatile,
		GOMAXPROCS: fuse.RecommendedGOMAXPROCS(),
		Logger:     logger,
	})
	if err != nil {
		logger.Printf("mount failed: %v", err)
		return err
	}
	if r.VFSFlags != 0 {
		// per-mount flags: a bind remount of the new mount
		fl := r.VFSFlags | unix.MS_REMOUNT | unix.MS_BIND
		if fl&unix.MS_NOATIME == 0 {
			fl |= unix.MS_RELATIME
		}
		if stack.ReadOnly() {
			fl |= unix.MS_RDONLY
		}
		if err := unix.Mount("", r.Target, "", fl, ""); err != nil {
			logger.Printf("set %s: %v; unmounting", vfsFlagNames(r.VFSFlags), err)
			_ = srv.Unmount()
			srv.Wait()
			return fmt.Errorf("fuse: set %s on %s: %w", vfsFlagNames(r.VFSFlags), r.Target, err)
		}
	}
	logger.Printf("mounted (%d lower layers, upper %q, read-only %v)", len(stack.Lowers()), stack.Upper(), stack.ReadOnly())
	if werr := r.ready.report(nil); werr != nil {
		logger.Printf("report readiness: %v", werr)
	}
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	for {
		select {
		case <-done:
			logger.Printf("unmounted; exiting")
			return nil
		case sig := <-sigs:
			logger.Printf("%v: unmounting", sig)
			if err := srv.Unmount(); err != nil {
				logger.Printf("unmount: %v", err)
			}
		}
	}
}

// userAllowOther reports whether /etc/fuse.conf lets users mount with
// allow_other.
func userAllowOther() bool {
	b, err := os.ReadFile("/etc/fuse.conf")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// vfsFlagNames is the --vfs-flags form of flags.
func vfsFlagNames(flags uintptr) string {
	var names []string
	for _, n := range []string{"nodev", "nosuid", "noexec", "noatime", "nodiratime"} {
		if flags&fuseVFSFlags[n] != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}

// readyPipe is the write end of the readiness pipe of a detached server
// (nil when this process was not started as one).
type readyPipe struct{ f *os.File }

// takeReadyPipe returns the readiness pipe named by readyFDEnv, if any,
// and clears the variable so that no child inherits it.
func takeReadyPipe() (*readyPipe, error) {
	v := os.Getenv(readyFDEnv)
	if v == "" {
		return nil, nil
	}
	_ = os.Unsetenv(readyFDEnv) // fails only for an invalid name
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", readyFDEnv, v, err)
	}
	return &readyPipe{os.NewFile(uintptr(fd), "ready")}, nil
}

// report tells the starting process "ok" (err nil) or err, once; later
// calls do nothing.
func (p *readyPipe) report(err error) error {
	if p == nil || p.f == nil {
		return nil
	}
	msg := "ok\n"
	if err != nil {
		msg = fmt.Sprintf("error %d %v\n", ExitCode(err), err)
	}
	_, werr := p.f.WriteString(msg)
	cerr := p.f.Close()
	p.f = nil
	if werr != nil {
		return werr
	}
	return cerr
}

// clearDeadFUSE detaches target if it is a FUSE mount whose server is
// gone (every access fails with ENOTCONN). It reports whether it did.
func clearDeadFUSE(target string) (bool, error) {
	var st unix.Statfs_t
	err := unix.Statfs(target, &st)
	if !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) {
		return false, nil
	}
	if err := fuse.ClearStale(target); err != nil {
		return false, err
	}
	return true, nil
}

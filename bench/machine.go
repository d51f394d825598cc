package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine describes where a report was measured.
type Machine struct {
	Kernel    string `json:"kernel"`
	CPU       string `json:"cpu"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int64  `json:"memory_mib"`
	FSType    string `json:"fs_type"`
	// Data says where the data lives ("on a loop-mounted …" or "directly …") (the loop-mounted ext4 image, or
	// directly on the host fs); HostFS is the fs holding --out, with its
	// mount options.
	Data          string `json:"data,omitempty"`
	HostFS        string `json:"host_fs,omitempty"`
	Go            string `json:"go"`
	FuseOverlayfs string `json:"fuse_overlayfs,omitempty"`
	Fusermount    string `json:"fusermount,omitempty"`
	FIO           string `json:"fio,omitempty"`
	Tar           string `json:"tar,omitempty"`
}

var fsMagic = map[int64]string{
	0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs",
	0x794C7630: "overlayfs", 0x2FC12FC1: "zfs", 0x65735546: "fuse", 0xF2F52010: "f2fs",
}

// Probe collects machine details; dir names the filesystem measured.
func Probe(dir string) Machine {
	m := Machine{Go: runtime.Version(), CPUs: runtime.NumCPU()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryMiB = int64(si.Totalram) * int64(si.Unit) >> 20
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		if n, ok := fsMagic[int64(st.Type)]; ok {
			m.FSType = n
		} else {
			m.FSType = fmt.Sprintf("0x%x", st.Type)
		}
	}
	m.FuseOverlayfs = version("fuse-overlayfs", "--version", "fuse-overlayfs")
	m.Fusermount = version("fusermount3", "--version", "fusermount3")
	m.FIO = version("fio", "--version", "")
	m.Tar = version("tar", "--version", "")
	return m
}

// version runs name arg and returns the first output line containing
// want (or the first line).
func version(name, arg, want string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	out, _ := exec.Command(p, arg).CombinedOutput()
	for _, l := range bytes.Split(out, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" && strings.Contains(s, want) {
			return s
		}
	}
	return ""
}

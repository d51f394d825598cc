package command

import (
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// xattrs lists the xattrs of p with their values.
func xattrs(p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return ""
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		v := make([]byte, 64<<10)
		m, _ := unix.Lgetxattr(p, name, v)
		if m < 0 {
			m = 0
		}
		b.WriteString(name + "=" + string(v[:m]) + ";")
	}
	return b.String()
}

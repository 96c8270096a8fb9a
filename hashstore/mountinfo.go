package hashstore

import (
	"bufio"
	"bytes"
	"path/filepath"
	"strings"
)

// isMountPoint reports whether path is the mount point of one of the entries
// in mountinfo (the format of /proc/self/mountinfo). It is a pure function so
// the parsing can be tested without a container.
//
// A credential file that is itself a mount point is a single-file bind mount:
// the container holds the host file's inode, so a host-side rename (what most
// editors and `mv` do) is never visible inside. Only in-place edits are.
func isMountPoint(mountinfo []byte, path string) bool {
	path = filepath.Clean(path)
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		if filepath.Clean(unescapeMountinfo(f[4])) == path {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the kernel's octal escaping of space, tab, newline
// and backslash (\040, \011, \012, \134) in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

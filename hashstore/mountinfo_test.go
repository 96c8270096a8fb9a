package hashstore

import "testing"

func TestIsMountPointFindsSingleFileBindMounts(t *testing.T) {
	const info = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
635 620 0:52 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
812 620 8:1 /srv/secrets/qwen-api-user.token /workspace/ComfyUI/.secrets/qwen-api-user.token ro,relatime - ext4 /dev/sda1 rw
813 620 8:1 /home/me/My\040Secrets/token /run/My\040Secrets/token ro,relatime - ext4 /dev/sda1 rw
814 620 8:1 /x /tab\011and\134back ro - ext4 /dev/sda1 rw
815 620 0:60 / /var/run/secrets/app rw - tmpfs tmpfs rw
garbage
`
	tests := []struct {
		path string
		want bool
	}{
		{"/workspace/ComfyUI/.secrets/qwen-api-user.token", true},
		{"/workspace/ComfyUI/.secrets/../.secrets/qwen-api-user.token", true},
		{"/workspace/ComfyUI/.secrets", false},
		{"/run/My Secrets/token", true},
		{`/run/My\040Secrets/token`, false},
		{"/tab\tand\\back", true},
		{"/var/run/secrets/app", true},
		{"/var/run/secrets/app/token", false},
		{"/nope", false},
	}
	for _, tt := range tests {
		if got := isMountPoint([]byte(info), tt.path); got != tt.want {
			t.Errorf("isMountPoint(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestUnescapeMountinfoLeavesBrokenEscapesAlone(t *testing.T) {
	for in, want := range map[string]string{
		`a\040b`: "a b",
		`a\04`:   `a\04`,
		`a\8888`: `a\8888`,
		`\134`:   `\`,
		`plain`:  "plain",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

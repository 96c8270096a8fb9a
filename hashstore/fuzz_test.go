package hashstore

import (
	"strconv"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		vectorHash, vectorHash + "\nadmin\n", vectorToken, "", "# c\n",
		strings.ReplaceAll(vectorHash, "$", "$$"), vectorHash[1:], vectorHash[:55],
		"$2a$10$" + vectorHash[7:] + "\r\n$2y$31$" + vectorHash[7:] + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			msg := err.Error()
			for _, line := range strings.Split(string(data), "\n") {
				for _, l := range []string{line, strings.TrimSpace(line)} {
					if len(l) >= 20 && strings.Contains(msg, l) {
						t.Fatalf("message %q contains input line %q", msg, l)
					}
				}
			}
			return
		}
		if len(c.Hashes) == 0 {
			t.Fatalf("accepted with no hash: %+v", c)
		}
		for _, h := range c.Hashes {
			if len(h) != 60 {
				t.Fatalf("accepted a %d-character hash", len(h))
			}
			if p := h[:4]; p != "$2a$" && p != "$2b$" && p != "$2y$" {
				t.Fatalf("accepted prefix %q", p)
			}
			cost, err := strconv.Atoi(h[4:6])
			if err != nil || cost < 4 || cost > 31 || h[6] != '$' {
				t.Fatalf("accepted cost field %q", h[4:7])
			}
		}
	})
}

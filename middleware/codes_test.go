package middleware

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEListsEveryRefusalCode: the README's status table documents
// exactly the codes the gateway defines, so neither can drift from the
// other.
func TestREADMEListsEveryRefusalCode(t *testing.T) {
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	codeCell := regexp.MustCompile("^`([a-z_]+)`$")
	documented := map[RefusalCode]bool{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## What each status means":
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case in && strings.HasPrefix(line, "|"):
			cells := strings.Split(line, "|")
			if len(cells) < 3 || strings.TrimSpace(cells[1]) == "status" {
				continue
			}
			if m := codeCell.FindStringSubmatch(strings.TrimSpace(cells[2])); m != nil {
				if documented[RefusalCode(m[1])] {
					t.Errorf("README lists %s twice", m[1])
				}
				documented[RefusalCode(m[1])] = true
			}
		}
	}
	if len(documented) == 0 {
		t.Fatal(`README has no code column in "## What each status means"`)
	}
	defined := map[RefusalCode]bool{}
	for _, c := range RefusalCodes {
		if defined[c] {
			t.Errorf("RefusalCodes lists %s twice", c)
		}
		defined[c] = true
		if !documented[c] {
			t.Errorf("code %s is not in README's status table", c)
		}
	}
	for c := range documented {
		if !defined[c] {
			t.Errorf("README documents %s, which the gateway does not define", c)
		}
	}
}

// TestRefuseWritesCodeBesideErrorAndReason: the one refusal writer keeps
// ComfyUI-Login's "error" and adds "reason" and "code", and records the
// code for the access log.
func TestRefuseWritesCodeBesideErrorAndReason(t *testing.T) {
	info := &Info{}
	r := httptest.NewRequest("GET", "/queue", nil)
	r = r.WithContext(WithInfo(r.Context(), info))
	w := httptest.NewRecorder()
	Refuse(w, r, http.StatusUnauthorized, CodeWrongToken, "Authentication required.", "token matches no configured credential")
	want := `{"error":"Authentication required.","reason":"token matches no configured credential","code":"wrong_token"}` + "\n"
	if w.Code != 401 || w.Body.String() != want {
		t.Fatalf("%d %s, want 401 %s", w.Code, w.Body, want)
	}
	if info.Code != CodeWrongToken {
		t.Fatalf("info.Code = %q", info.Code)
	}
}

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

// TestGuestAnswerThatCannotBeCheckedIsRefusedWithItsCode: when ComfyUI's
// /queue answer is not JSON, a guest gets 502 guest_unchecked rather than
// the unchecked answer (the real server's fake ComfyUI always sends JSON,
// so this one runs on the policy alone).
func TestGuestAnswerThatCannotBeCheckedIsRefusedWithItsCode(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"queue_running": [not json`))
	})
	h := GuestPolicy(GuestOptions{
		SessionID: func(*http.Request) ([16]byte, bool) { return [16]byte{1}, true },
		Key:       []byte("test-key"),
	})(upstream)
	info := &Info{Method: MethodGuest}
	r := httptest.NewRequest("GET", "/queue", nil)
	r = r.WithContext(WithInfo(r.Context(), info))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), `"code":"guest_unchecked"`) || info.Code != CodeGuestUnchecked {
		t.Fatalf("%d %s (logged code %q), want 502 with code guest_unchecked", w.Code, w.Body, info.Code)
	}
	if strings.Contains(w.Body.String(), "queue_running") {
		t.Fatal("the unchecked answer reached the guest")
	}
}

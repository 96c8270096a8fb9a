package hashstore

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAppendThenRetireKeepsInodeModeAndUsername(t *testing.T) {
	path := filepath.Join(t.TempDir(), "PASSWORD")
	oldHash, newHash := cheapHash(t, "old"), cheapHash(t, "new")
	if err := os.WriteFile(path, []byte("# managed\n"+oldHash+"\nalice"), 0o640); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)

	creds, err := AppendHash(path, newHash)
	if err != nil {
		t.Fatal(err)
	}
	if len(creds.Hashes) != 2 || creds.Hashes[1] != newHash || creds.Username != "alice" {
		t.Fatalf("after append: %+v", creds)
	}
	if _, err := AppendHash(path, newHash); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("appending the same hash twice: %v", err)
	}

	removed, kept, err := RetireOld(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != Fingerprint(oldHash) || kept != Fingerprint(newHash) {
		t.Fatalf("removed %v kept %s", removed, kept)
	}
	data, _ := os.ReadFile(path)
	if got, want := string(data), "# managed\nalice\n"+newHash+"\n"; got != want {
		t.Fatalf("file after retire:\n%q\nwant\n%q", got, want)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || after.Mode().Perm() != 0o640 {
		t.Fatalf("the file was replaced or its mode changed: same=%v mode=%v", os.SameFile(before, after), after.Mode())
	}

	removed, _, err = RetireOld(path)
	if err != nil || len(removed) != 0 {
		t.Fatalf("retiring with one hash left: removed %v, %v", removed, err)
	}
}

func TestRotationRefusesBrokenOrMissingFiles(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.token")
	if err := os.WriteFile(broken, []byte("2b12UDceblhZeEySDwVMC0ccN.IaQmMBfKdTY.aAE3poXcq1zsOP6coni\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := cheapHash(t, "x")
	tests := []struct {
		name, path, hash, says string
	}{
		{"missing file", filepath.Join(dir, "nope"), good, "token generate"},
		{"broken file left untouched", broken, good, "left untouched"},
		{"invalid new hash", broken, "not-a-hash-at-all-but-long-enough", "new hash is not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := AppendHash(tt.path, tt.hash)
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("AppendHash: %v, want it to say %q", err, tt.says)
			}
		})
	}
	if _, _, err := RetireOld(broken); err == nil {
		t.Fatal("RetireOld accepted a broken file")
	}
}

// TestUserEditsLeaveEveryOtherLineByteForByte: adding, rotating, retiring
// and removing one user rewrite the file in place (same inode, same mode)
// and change that user's lines only; comments, the username line, the bare
// lines (CRLF and trailing spaces included) and other users' lines stay
// byte for byte.
func TestUserEditsLeaveEveryOtherLineByteForByte(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	bare, a1, a2, b1, c1 := cheapHash(t, "bare"), cheapHash(t, "a1"), cheapHash(t, "a2"), cheapHash(t, "b1"), cheapHash(t, "c1")
	head := "# class of 2026\r\n" + bare + "  \r\n\nalice:" + a1 + "\n"
	tail := "# bob below\nbob : " + b1 + "\nteacher\n"
	if err := os.WriteFile(path, []byte(head+tail[:len(tail)-1]), 0o640); err != nil { // no final newline
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	step := func(what, want string) {
		t.Helper()
		got, _ := os.ReadFile(path)
		if string(got) != want {
			t.Fatalf("after %s:\n%q\nwant\n%q", what, got, want)
		}
		after, _ := os.Stat(path)
		if !os.SameFile(before, after) || after.Mode().Perm() != 0o640 {
			t.Fatalf("after %s the file was replaced or its mode changed: same=%v mode=%v", what, os.SameFile(before, after), after.Mode())
		}
	}

	creds, err := AddUsers(path, []UserHash{{"carol", c1}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if creds.Username != "teacher" || len(creds.Hashes) != 4 || creds.Users[3] != "carol" {
		t.Fatalf("after AddUsers: %+v", creds)
	}
	step("adding carol", head+tail+"carol:"+c1+"\n")

	if _, err := AppendUserHash(path, "alice", a2); err != nil {
		t.Fatal(err)
	}
	step("rotating alice", head+"alice:"+a2+"\n"+tail+"carol:"+c1+"\n")

	removed, kept, err := RetireUserOld(path, "alice")
	if err != nil || len(removed) != 1 || removed[0] != Fingerprint(a1) || kept != Fingerprint(a2) {
		t.Fatalf("RetireUserOld: removed %v kept %s, %v", removed, kept, err)
	}
	headA2 := strings.Replace(head, "alice:"+a1, "alice:"+a2, 1)
	step("retiring alice's old line", headA2+tail+"carol:"+c1+"\n")

	removed, err = RemoveUser(path, "bob")
	if err != nil || len(removed) != 1 || removed[0] != Fingerprint(b1) {
		t.Fatalf("RemoveUser: removed %v, %v", removed, err)
	}
	step("removing bob", headA2+"# bob below\nteacher\ncarol:"+c1+"\n")

	if _, err := RemoveUser(path, "bob"); err == nil || !strings.Contains(err.Error(), "no user bob") {
		t.Fatalf("removing bob twice: %v", err)
	}
	if _, err := AppendUserHash(path, "bob", b1); err == nil || !strings.Contains(err.Error(), "token generate --user bob") {
		t.Fatalf("rotating a user who is not there: %v", err)
	}
	step("the refused edits", headA2+"# bob below\nteacher\ncarol:"+c1+"\n")
}

func TestAddUsersRefusesAnExistingUserUnlessReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	a1, a2, a3, b1 := cheapHash(t, "a1"), cheapHash(t, "a2"), cheapHash(t, "a3"), cheapHash(t, "b1")
	orig := "alice:" + a1 + "\nbob:" + b1 + "\nalice:" + a2 + "\n"
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := AddUsers(path, []UserHash{{"zed", cheapHash(t, "z")}, {"alice", a3}}, false)
	var exists *UserExistsError
	if !errors.As(err, &exists) || len(exists.Names) != 1 || exists.Names[0] != "alice" || !strings.Contains(err.Error(), "token rotate --user alice") {
		t.Fatalf("adding an existing user: %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != orig {
		t.Fatalf("a refused AddUsers changed the file:\n%q", got)
	}
	if _, err := AddUsers(path, []UserHash{{"Alice", a3}}, true); err == nil || !strings.Contains(err.Error(), "only in letter case") {
		t.Fatalf("adding Alice beside alice: %v", err)
	}
	if _, err := AddUsers(path, []UserHash{{"zed", a3}, {"Zed", a3}}, false); err == nil || !strings.Contains(err.Error(), "letter case") {
		t.Fatalf("adding zed and Zed: %v", err)
	}
	if _, err := AddUsers(path, []UserHash{{"alice", a3}}, true); err != nil {
		t.Fatal(err)
	}
	if got, want := readString(t, path), "alice:"+a3+"\nbob:"+b1+"\n"; got != want {
		t.Fatalf("replace: %q, want %q (the new line at the first old line's place, the others gone)", got, want)
	}
}

func TestAddUsersCreatesAMissingFileReadableByItsOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	a, b := cheapHash(t, "a"), cheapHash(t, "b")
	creds, err := AddUsers(path, []UserHash{{"alice", a}, {"bob", b}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readString(t, path), NewFileHeader+"alice:"+a+"\nbob:"+b+"\n"; got != want {
		t.Fatalf("new file %q, want %q", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("new file mode %v, want 0600", fi.Mode())
	}
	if len(creds.Users) != 2 || creds.Users[0] != "alice" || creds.Users[1] != "bob" {
		t.Fatalf("creds %+v", creds)
	}
}

// TestRemoveUserRefusesTheLastCredential: an empty credential file does not
// lock anyone out, it is refused by the gateway, which then keeps the last
// good credentials, so the removed user would stay in. RemoveUser refuses,
// and says why.
func TestRemoveUserRefusesTheLastCredential(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	orig := "# one user\nalice:" + cheapHash(t, "a") + "\nalice:" + cheapHash(t, "a2") + "\n"
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := RemoveUser(path, "alice")
	if !errors.Is(err, ErrLastCredential) || !strings.Contains(err.Error(), "stay in until a restart") {
		t.Fatalf("removing the last user: %v", err)
	}
	if got := readString(t, path); got != orig {
		t.Fatalf("the refused removal changed the file: %q", got)
	}
}

// TestRetireOldTouchesOnlyTheBareLines: the unnamed rotation keeps the
// newest bare line and every named line.
func TestRetireOldTouchesOnlyTheBareLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	old, alice, newer := cheapHash(t, "old"), cheapHash(t, "a"), cheapHash(t, "new")
	if err := os.WriteFile(path, []byte(old+"\nalice:"+alice+"\n"+newer+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	removed, kept, err := RetireOld(path)
	if err != nil || len(removed) != 1 || removed[0] != Fingerprint(old) || kept != Fingerprint(newer) {
		t.Fatalf("RetireOld: %v %s %v", removed, kept, err)
	}
	if got, want := readString(t, path), "alice:"+alice+"\n"+newer+"\n"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	only := filepath.Join(t.TempDir(), "named-only")
	if err := os.WriteFile(only, []byte("alice:"+alice+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := RetireOld(only); err == nil || !strings.Contains(err.Error(), "--user NAME") {
		t.Fatalf("RetireOld on a file of named lines only: %v", err)
	}
}

// TestUserEditsRefuseInvalidNames: every edit checks the name with
// ValidUserName and says its sentence; the file is not touched.
func TestUserEditsRefuseInvalidNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	h := cheapHash(t, "x")
	orig := "alice:" + h + "\n"
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "default", "Guest", "a b", "x:y", strings.Repeat("n", 65), "é"} {
		want := ValidUserName(name)
		if want == nil {
			t.Fatalf("ValidUserName(%q) accepted it", name)
		}
		_, e1 := AddUsers(path, []UserHash{{name, cheapHash(t, "n")}}, true)
		_, e2 := AppendUserHash(path, name, cheapHash(t, "n"))
		_, e3 := RemoveUser(path, name)
		for i, err := range []error{e1, e2, e3} {
			if err == nil || err.Error() != want.Error() {
				t.Errorf("name %q, edit %d: %v, want %q", name, i, err, want)
			}
		}
	}
	if got := readString(t, path); got != orig {
		t.Fatalf("refused edits changed the file: %q", got)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzUserEdits: on any credential file Parse accepts and any valid name,
// each per-user edit the tools would make reads back through Parse exactly
// as intended (the user's lines as planned, every other line and the
// username line as they were): the editing tools and the parser agree on
// which line is whose. The file writes themselves are tested above; fsync
// per execution would make fuzzing crawl.
func FuzzUserEdits(f *testing.F) {
	for _, s := range []struct{ file, name string }{
		{"alice:" + vectorHash + "\n" + vectorHash + "\nbob:" + vectorHash + "\n", "alice"},
		{"\ufeff# c\r\nalice : " + vectorHash + "\r\nteacher\nalice:" + vectorHash, "alice"},
		{vectorHash + "\nbob:" + vectorHash, "bob"},
		{"Alice:" + vectorHash + "\nalice:" + vectorHash, "alice"},
		{"alice:" + vectorHash + "\nalice:hunter2\n", "alice"},
		{"x:" + vectorHash + "\n\n#x:" + vectorHash + "\nDr x: " + vectorHash + "\n", "x"},
		{vectorHash, "default"},
	} {
		f.Add([]byte(s.file), s.name)
	}
	newHash := cheapHash(f, "new")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		before, err := Parse(data)
		if err != nil || ValidUserName(name) != nil {
			return
		}
		old := hashesOf(before, name)
		edits := map[string]edit{"remove": planRemove(data, name)}
		if caseTwin(before, name) == "" { // else refused before planning
			edits["add"] = planAdd(data, []UserHash{{name, newHash}}, map[string][]string{name: {newHash}})
		}
		if len(old) > 0 && !slices.Contains(before.Hashes, newHash) {
			edits["append"] = planAppend(data, name, newHash, old)
		}
		if len(old) > 0 {
			edits["retire"] = planRetire(data, name, old[len(old)-1])
		}
		if bare := hashesOf(before, ""); len(bare) > 0 {
			edits["retire bare"] = planRetire(data, "", bare[len(bare)-1])
		}
		for what, e := range edits {
			if what == "remove" && len(old) == len(before.Hashes) {
				continue // the last credential: refused before planning
			}
			if _, err := e.verify("f", before); err != nil {
				t.Fatalf("%s %q: %v\n%q\n->\n%q", what, name, err, data, e.out)
			}
		}
	})
}

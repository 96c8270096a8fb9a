package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"
)

// runHash prints the bcrypt hash of a password read from stdin, like
// `htpasswd -B`. On a terminal it asks twice without echo, because a typo in
// a password nobody sees is found only at the next 401; from a pipe it reads
// one line, so scripts never put the secret on a command line.
func runHash(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth hash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", 12, "bcrypt `cost` (10..14)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: comfyui-auth hash [--cost 12] < password\n  reads a password from stdin (asks twice, without echo, on a terminal) and prints its bcrypt hash\n")
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if !checkCost(*cost, stderr, fs.Name()) {
		return 2
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	h, err := bcrypt.GenerateFromPassword(pw, *cost)
	if err != nil {
		fmt.Fprintf(stderr, "%s: hashing: %v\n", fs.Name(), err)
		return 1
	}
	fmt.Fprintln(stdout, string(h))
	return 0
}

func readPassword(stdin io.Reader, stderr io.Writer) ([]byte, error) {
	var pw []byte
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, fmt.Errorf("reading the password: %w", err)
		}
		fmt.Fprint(stderr, "Again: ")
		second, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, fmt.Errorf("reading the password: %w", err)
		}
		if !bytes.Equal(first, second) {
			return nil, errors.New("the two passwords differ: run it again")
		}
		pw = first
	} else {
		line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	}
	switch {
	case len(pw) == 0:
		return nil, errors.New("the password is empty: type one, or pipe one line (printf '%s\\n' \"$PW\" | comfyui-auth hash)")
	case len(pw) > 72:
		return nil, fmt.Errorf("the password is %d bytes; bcrypt checks at most 72, so use a shorter one (`comfyui-auth token generate` makes 32-character tokens)", len(pw))
	}
	return pw, nil
}

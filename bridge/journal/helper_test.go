package journal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The lock and crash tests need a real second process. Like os/exec's
// tests, the test binary runs itself with helperEnv set; TestMain then
// plays the helper instead of running the tests:
//
//	hold               open the journal and wait
//	write <p> <n>      record n connections with id prefix p as opened, wait until written
//	replay <k> <p> <n> open, answer (Gone) the first k orphans, record n new ones; wait until written
//	churn <p> <n>      record n connections, then open and close others until killed (8 KiB segments)
//
// It prints "answered <id>" per Gone, then "ready <pid>", and blocks until
// killed or until its stdin closes.
const helperEnv = "WSBRIDGE_JOURNAL_HELPER"

func TestMain(m *testing.M) {
	if args := os.Getenv(helperEnv); args != "" {
		os.Exit(helperMain(strings.Fields(args)))
	}
	os.Exit(m.Run())
}

func helperMain(args []string) int {
	dir := os.Getenv(helperEnv + "_DIR")
	var opts Options
	if args[0] == "churn" {
		opts.SegmentSize = 8 << 10
	}
	j, rec, err := Open(dir, opts)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	switch args[0] {
	case "write":
		for i := range atoi(args[2]) {
			if _, err := j.Opened(testEntry(args[1], i)); err != nil {
				fmt.Println("error", err)
				return 1
			}
		}
	case "churn":
		// n connections that stay, then open+gone pairs until killed,
		// ready once the compactor has run.
		n := atoi(args[2])
		for i := range n {
			if _, err := j.Opened(testEntry(args[1], i)); err != nil {
				fmt.Println("error", err)
				return 1
			}
		}
		for i := n; ; i++ {
			e := testEntry(args[1], i)
			if _, err := j.Opened(e); err != nil {
				if errors.Is(err, ErrFull) {
					_ = j.Flush()
					continue
				}
				fmt.Println("error", err)
				return 1
			}
			j.Gone(e.ConnID)
			if i == n+20000 {
				_ = j.Flush()
				for j.Stats().Compactions < 2 {
					time.Sleep(time.Millisecond)
				}
				fmt.Printf("ready %d\n", os.Getpid())
			}
		}
	case "replay":
		for _, o := range rec.Orphans[:atoi(args[1])] {
			j.Gone(o.ConnID)
			fmt.Printf("answered %s\n", o.ConnID)
		}
		for i := range atoi(args[3]) {
			if _, err := j.Opened(testEntry(args[2], i)); err != nil {
				fmt.Println("error", err)
				return 1
			}
		}
	}
	// Written, not fsynced: what a kill -9 must keep.
	if err := j.Flush(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Printf("ready %d\n", os.Getpid())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// helper is a running helper process.
type helper struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	answered []string // ids the helper recorded Gone
}

// startHelper runs the helper on dir and waits for "ready".
func startHelper(t *testing.T, dir string, args ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, " "), helperEnv+"_DIR="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { h.kill() })
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			switch {
			case !ok:
				t.Fatalf("helper %v exited before it was ready", args)
			case strings.HasPrefix(l, "answered "):
				h.answered = append(h.answered, strings.TrimPrefix(l, "answered "))
			case strings.HasPrefix(l, "ready "):
				go func() {
					for range lines {
					}
				}()
				return h
			default:
				t.Fatalf("helper %v: %s", args, l)
			}
		case <-deadline:
			t.Fatalf("helper %v not ready after 60s", args)
		}
	}
}

// kill sends SIGKILL (kill -9) and reaps the process.
func (h *helper) kill() {
	if h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

func connIDs(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.ConnID)
	}
	return out
}

func idsOf(p string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, string(testEntry(p, i).ConnID))
	}
	slices.Sort(out)
	return out
}

// requireOrphans checks that got holds exactly the entries of want (ids),
// with their ClientId and X-Forwarded-For intact.
func requireOrphans(t *testing.T, got []Entry, want []string, byID map[string]Entry) {
	t.Helper()
	ids := connIDs(got)
	slices.Sort(ids)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(ids, want) {
		t.Fatalf("got %d orphans, want %d (first got %q, first want %q)", len(ids), len(want), first(ids), first(want))
	}
	for _, o := range got {
		w, ok := byID[string(o.ConnID)]
		if ok && (!bytes.Equal(o.ClientID, w.ClientID) || !bytes.Equal(o.XFF, w.XFF)) {
			t.Fatalf("orphan %s: got ClientId %q XFF %q, want %q %q", o.ConnID, o.ClientID, o.XFF, w.ClientID, w.XFF)
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func entriesOf(p string, n int) map[string]Entry {
	m := make(map[string]Entry, n)
	for i := range n {
		e := testEntry(p, i)
		m[string(e.ConnID)] = e
	}
	return m
}

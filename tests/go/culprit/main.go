// culprit writes to two maps from known lines of code, so the tests can check that
// map-trace names each event's map type and the line that caused it. Lines marked
// `SITE:<name>` are found by the tests; keep each marker on the line of its map operation.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"unsafe"
)

type Session struct {
	id    int
	owner string
}

// Package-level so both map headers live on the heap at fixed addresses.
var (
	sessions = map[string]*Session{}
	visits   = map[int]int{}
)

//go:noinline
func register(name string, id int) {
	sessions[name] = &Session{id: id, owner: name} // SITE:register
}

// visit is small enough for the compiler to inline into main: its frame exists only in the
// binary's inline tables.
func visit(id int) {
	visits[id]++ // SITE:visit
}

//go:noinline
func expire(name string) {
	delete(sessions, name) // SITE:expire
}

//go:noinline
func reset() {
	// Compiled to one runtime.mapclear call, as clear(visits) is (Go 1.19 has no clear).
	for k := range visits { // SITE:reset
		delete(visits, k)
	}
}

type report struct {
	Sessions  string `json:"sessions"`
	Visits    string `json:"visits"`
	Registers int    `json:"registers"`
	VisitOps  int    `json:"visit_ops"`
	Expires   int    `json:"expires"`
	Resets    int    `json:"resets"`
	Cgo       int    `json:"cgo"`
}

func addr(p unsafe.Pointer) string { return fmt.Sprintf("%#x", *(*uintptr)(p)) }

func main() {
	n := flag.Int("n", 5000, "sessions to register")
	wait := flag.Bool("wait", false, "print ready, then wait for a line on stdin before operating")
	out := flag.String("out", "", "write the JSON report here")
	flag.Parse()

	r := report{Sessions: addr(unsafe.Pointer(&sessions)), Visits: addr(unsafe.Pointer(&visits))}
	if *wait {
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	for i := 0; i < *n; i++ {
		register(fmt.Sprintf("user-%d", i), i)
		r.Registers++
	}
	for i := 0; i < *n/10; i++ {
		visit(i % 7)
		r.VisitOps++
	}
	for i := 0; i < *n/4; i++ {
		expire(fmt.Sprintf("user-%d", i))
		r.Expires++
	}
	reset()
	r.Resets++
	r.Cgo = extra()

	if *out != "" {
		b, _ := json.Marshal(r)
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			panic(err)
		}
	}
}

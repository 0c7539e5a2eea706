// callsite assigns to a package-level map from a named function and from a function the
// compiler inlines, so the tests can symbolize the call sites and name the map's type. The
// lines marked CALLSITE and INLINED are found by the tests; do not move the markers.
//
// It prints the run-time addresses of the map's and *Session's type descriptors and of
// main.main: the tests compare type names at those addresses (less main.main's load bias)
// with what the binary says.
package main

import (
	"fmt"
	"os"
	"reflect"
	"unsafe"
)

type Session struct {
	id    int
	owner string
}

var sessions = map[string]*Session{}

// register is kept out of line so its call to mapassign_faststr is its own.
//
//go:noinline
func register(name string, id int) {
	sessions[name] = &Session{id: id, owner: name} // CALLSITE
}

// remember is small enough to be inlined into main.
func remember(name string) {
	sessions[name] = nil // INLINED
}

// typeAddr is the type word of an interface holding v: its type descriptor.
func typeAddr(v any) uintptr {
	return (*[2]uintptr)(unsafe.Pointer(&v))[0]
}

func main() {
	register("a", 1)
	remember(os.Args[0])
	fmt.Printf("map %#x session %#x main %#x cgo %d count %d\n",
		typeAddr(sessions), typeAddr(&Session{}), reflect.ValueOf(main).Pointer(), extra(), len(sessions))
}

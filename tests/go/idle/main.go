// idle uses no maps of its own: it prints ready and waits for a line on stdin. The tests use it
// where a Go target must stay untouched (bad input, old versions, missing functions).
package main

import "syscall"

func main() {
	syscall.Write(1, []byte("ready\n"))
	var b [1]byte
	syscall.Read(0, b[:])
}

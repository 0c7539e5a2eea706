//go:build cgo

package main

// static int answer(void) { return 42; }
import "C"

// extra calls into C so a cgo build is linked externally.
func extra() int { return int(C.answer()) }

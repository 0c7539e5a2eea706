// Package procstest is traced through `go test`: its test does a known number of map assigns
// and deletes on the package-level map M and reports them with the test binary's pid and the
// map's header address.
package procstest

// M is package-level, made once by the test: its header's address is its identity.
var M map[int]int

// Work assigns n distinct keys to M, then deletes the first d of them.
func Work(n, d int) {
	for i := 0; i < n; i++ {
		M[i] = i
	}
	for i := 0; i < d; i++ {
		delete(M, i)
	}
}

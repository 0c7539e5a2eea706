// mapops performs a known number of map operations on maps of every key kind map-trace
// hashes differently, and reports what it did, so the integration tests can compare
// map-trace's events with the truth.
//
// Each operation runs at a random stack depth in a fresh goroutine, so some calls enter the
// runtime with too little stack and go through morestack: a tracer that probes a function's
// first byte counts those twice.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand"
	"os"
	"sync"
	"unsafe"
)

type node struct{ id int }

// tally is what one map saw, in the terms of map-trace's events.
type tally struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Assigns uint64 `json:"assigns"`
	Deletes uint64 `json:"deletes"`
	Clears  uint64 `json:"clears"`
	// Wrapping sums of the key hashes of assigns and deletes: order-independent, and any
	// missing, extra or wrongly hashed key changes them.
	AssignHashSum uint64 `json:"assign_hash_sum"`
	DeleteHashSum uint64 `json:"delete_hash_sum"`
	// len(m) just before each clear, in order.
	ClearCounts []int `json:"clear_counts"`
}

func keyHash(b []byte) uint64 {
	h := fnv.New64a()
	if len(b) > 128 {
		b = b[:128]
	}
	h.Write(b)
	return h.Sum64()
}

func le64(v uint64) []byte { b := make([]byte, 8); binary.LittleEndian.PutUint64(b, v); return b }
func le32(v uint32) []byte { b := make([]byte, 4); binary.LittleEndian.PutUint32(b, v); return b }

// Package-level so every map header lives on the heap at a fixed address.
var (
	strMap   map[string]int
	i64Map   map[int64]int
	i32Map   map[int32]int
	ptrMap   map[*node]int
	arrMap   map[[16]byte]int
	nodes    []*node
	rng      = rand.New(rand.NewSource(1))
	depthMax = 64
)

func addr(p unsafe.Pointer) string { return fmt.Sprintf("%#x", *(*uintptr)(p)) }

// deep runs f after recursing d frames, each with some stack, in a new goroutine.
func deep(d int, f func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); recurse(d, f) }()
	wg.Wait()
}

//go:noinline
func recurse(d int, f func()) {
	var pad [64]byte
	if d > 0 {
		recurse(d-1, f)
		pad[d%64]++
		return
	}
	f()
}

func strKey(i int) string {
	if i%97 == 0 {
		// Longer than the 128 bytes that are hashed.
		return fmt.Sprintf("%0200d", i)
	}
	return fmt.Sprintf("key-%d", i)
}

func arrKey(i int) [16]byte {
	var k [16]byte
	binary.LittleEndian.PutUint64(k[:], uint64(i)*2654435761)
	binary.LittleEndian.PutUint64(k[8:], uint64(i))
	return k
}

func main() {
	n := flag.Int("n", 3000, "distinct keys per map")
	wait := flag.Bool("wait", false, "print ready, then wait for a line on stdin before operating")
	out := flag.String("out", "", "write the JSON report here")
	hold := flag.Bool("hold", false, "after the report, print held, then wait for a line on stdin before exiting")
	flag.Parse()
	stdin := bufio.NewReader(os.Stdin)

	strMap = make(map[string]int)
	i64Map = make(map[int64]int)
	i32Map = make(map[int32]int)
	ptrMap = make(map[*node]int)
	arrMap = make(map[[16]byte]int)
	for i := 0; i < *n; i++ {
		nodes = append(nodes, &node{i})
	}

	ts := []*tally{
		{Name: "string", Addr: addr(unsafe.Pointer(&strMap))},
		{Name: "int64", Addr: addr(unsafe.Pointer(&i64Map))},
		{Name: "int32", Addr: addr(unsafe.Pointer(&i32Map))},
		{Name: "pointer", Addr: addr(unsafe.Pointer(&ptrMap))},
		{Name: "array16", Addr: addr(unsafe.Pointer(&arrMap))},
	}
	if *wait {
		// The string map's header address rides on the ready line, for --map.
		fmt.Println("ready", ts[0].Addr)
		stdin.ReadString('\n')
	}

	// One operation per map kind: assign, delete, clear. The clear is the range-delete idiom,
	// which every Go release compiles to one runtime.mapclear call, as it does clear(m):
	// Go 1.19 has no clear.
	type ops struct {
		assign func(i int) []byte
		del    func(i int) []byte
		clear  func() int
	}
	table := []ops{
		{
			assign: func(i int) []byte { k := strKey(i); strMap[k] = i; return []byte(k) },
			del:    func(i int) []byte { k := strKey(i); delete(strMap, k); return []byte(k) },
			clear: func() int {
				l := len(strMap)
				for k := range strMap {
					delete(strMap, k)
				}
				return l
			},
		},
		{
			assign: func(i int) []byte { i64Map[int64(i)-1000] = i; return le64(uint64(int64(i) - 1000)) },
			del:    func(i int) []byte { delete(i64Map, int64(i)-1000); return le64(uint64(int64(i) - 1000)) },
			clear: func() int {
				l := len(i64Map)
				for k := range i64Map {
					delete(i64Map, k)
				}
				return l
			},
		},
		{
			assign: func(i int) []byte { i32Map[int32(i)*7] = i; return le32(uint32(int32(i) * 7)) },
			del:    func(i int) []byte { delete(i32Map, int32(i)*7); return le32(uint32(int32(i) * 7)) },
			clear: func() int {
				l := len(i32Map)
				for k := range i32Map {
					delete(i32Map, k)
				}
				return l
			},
		},
		{
			assign: func(i int) []byte { p := nodes[i]; ptrMap[p] = i; return le64(uint64(uintptr(unsafe.Pointer(p)))) },
			del:    func(i int) []byte { p := nodes[i]; delete(ptrMap, p); return le64(uint64(uintptr(unsafe.Pointer(p)))) },
			clear: func() int {
				l := len(ptrMap)
				for k := range ptrMap {
					delete(ptrMap, k)
				}
				return l
			},
		},
		{
			assign: func(i int) []byte { k := arrKey(i); arrMap[k] = i; return k[:] },
			del:    func(i int) []byte { k := arrKey(i); delete(arrMap, k); return k[:] },
			clear: func() int {
				l := len(arrMap)
				for k := range arrMap {
					delete(arrMap, k)
				}
				return l
			},
		},
	}

	doAssign := func(m int, i int) {
		deep(rng.Intn(depthMax), func() {
			h := keyHash(table[m].assign(i))
			ts[m].Assigns++
			ts[m].AssignHashSum += h
		})
	}
	doDelete := func(m int, i int) {
		deep(rng.Intn(depthMax), func() {
			h := keyHash(table[m].del(i))
			ts[m].Deletes++
			ts[m].DeleteHashSum += h
		})
	}
	doClear := func(m int) {
		deep(rng.Intn(depthMax), func() {
			ts[m].ClearCounts = append(ts[m].ClearCounts, table[m].clear())
			ts[m].Clears++
		})
	}

	for m := range table {
		for i := 0; i < *n; i++ { // distinct inserts
			doAssign(m, i)
		}
		for i := 0; i < *n; i += 2 { // overwrites
			doAssign(m, i)
		}
		for i := 0; i < *n; i += 3 { // deletes, some of keys already gone
			doDelete(m, i)
			doDelete(m, i)
		}
		doClear(m)
		for i := 0; i < *n/4; i++ {
			doAssign(m, i)
		}
		doClear(m)
	}

	report, _ := json.Marshal(map[string]any{"maps": ts})
	if *out != "" {
		if err := os.WriteFile(*out, report, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	} else {
		fmt.Println(string(report))
	}
	if *hold {
		// Still running, its work done: the tests read what map-trace serves meanwhile.
		fmt.Println("held")
		stdin.ReadString('\n')
	}
}

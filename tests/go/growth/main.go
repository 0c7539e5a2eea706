// growth makes maps grow in ways whose steps the tests can predict, and reports what it
// knows about them: header addresses, goroutine ids, and the classic header's B.
//
//   - det: a hint-less map[int64]int with N distinct inserts and no deletes. Classic maps
//     double exactly B times (B read back from the header afterwards); a swiss map that
//     stays within one table goes small, to-table, then doubles 16->32->...->1024.
//   - big: enough string keys to split swiss tables and evacuate many classic buckets.
//   - churn: inserts and deletes interleaved, in another goroutine.
//
// It ends with a full GC and reports how many cycles ran.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"unsafe"
)

var (
	det   map[int64]int
	big   map[string]int
	churn map[int32]int
)

func header(p unsafe.Pointer) uintptr { return *(*uintptr)(p) }

// goid parses the current goroutine's id from its stack header ("goroutine 7 [running]:").
func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	fields := bytes.Fields(buf)
	id, err := strconv.ParseUint(string(fields[1]), 10, 64)
	if err != nil {
		panic(err)
	}
	return id
}

type mapReport struct {
	Addr string `json:"addr"`
	Goid uint64 `json:"goid"`
}

func main() {
	n := flag.Int("n", 800, "distinct inserts into det")
	out := flag.String("out", "", "write the JSON report here")
	flag.Parse()

	det = make(map[int64]int)
	for i := 0; i < *n; i++ {
		det[int64(i)*7919] = i
	}
	// hmap.B, at offset 9 of the classic header (checked against DWARF by the tests);
	// meaningless for swiss maps.
	classicB := *(*uint8)(unsafe.Pointer(header(unsafe.Pointer(&det)) + 9))

	big = make(map[string]int)
	for i := 0; i < 20000; i++ {
		big["key-"+strconv.Itoa(i)] = i
	}

	var wg sync.WaitGroup
	var churnGoid uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		churnGoid = goid()
		churn = make(map[int32]int)
		for round := 0; round < 20; round++ {
			for i := 0; i < 500; i++ {
				churn[int32(round*500+i)] = i
			}
			for i := 0; i < 450; i++ {
				delete(churn, int32(round*500+i))
			}
		}
	}()
	wg.Wait()

	// Every GC cycle of the run, completed: the tests check map-trace saw each one.
	runtime.GC()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)

	report := map[string]any{
		"n":         *n,
		"numgc":     stats.NumGC,
		"classic_b": classicB,
		"det":       mapReport{fmt.Sprintf("%#x", header(unsafe.Pointer(&det))), goid()},
		"big":       mapReport{fmt.Sprintf("%#x", header(unsafe.Pointer(&big))), goid()},
		"churn":     mapReport{fmt.Sprintf("%#x", header(unsafe.Pointer(&churn))), churnGoid},
	}
	data, _ := json.Marshal(report)
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

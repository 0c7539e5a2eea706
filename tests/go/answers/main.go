// answers makes maps whose findings are known, so the tests can check map-trace's sites,
// bytes and findings against the program itself and the Go heap's own measurement:
//
//   - grown: made without a hint and grown to 100,000 elements (presize);
//   - shrunk: grown to 200,000 elements, then deleted down to 1,000 (shrink);
//   - 2,000 small maps made on one line.
//
// Each map's bytes are HeapAlloc after minus before, with a GC on both sides. It writes a
// JSON report (-out), then waits for a line on stdin when -wait is given.
//
// With -pre N it does none of that: it fills a map with N elements before tracing can
// begin, prints "ready", waits for a line, writes one more element (so a tracer sees the
// map), reports the map and its bytes, prints "held" and waits for a line again.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
)

var (
	grown  map[int]int
	shrunk map[int]int
	small  []map[string]int
)

type mapReport struct {
	Addr  string `json:"addr"`
	Line  int    `json:"line"`
	Bytes uint64 `json:"bytes"`
	Count int    `json:"count"`
}

type report struct {
	File   string    `json:"file"`
	Grown  mapReport `json:"grown"`
	Shrunk mapReport `json:"shrunk"`
	// SmallLine made SmallMaps maps.
	SmallLine int `json:"small_line"`
	SmallMaps int `json:"small_maps"`
}

// heap is the live heap after a full GC.
func heap() uint64 {
	runtime.GC()
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	return s.HeapAlloc
}

// here is the line that calls it.
func here() int {
	_, _, line, _ := runtime.Caller(1)
	return line
}

func main() {
	out := flag.String("out", "", "write the JSON report here")
	wait := flag.Bool("wait", false, "wait for a line on stdin before exiting")
	pre := flag.Int("pre", 0, "only fill a map of this many elements before tracing")
	flag.Parse()
	if *pre > 0 {
		madeBefore(*pre, *out)
		return
	}
	_, file, _, _ := runtime.Caller(0)
	r := report{File: file}

	before := heap()
	r.Grown.Line = here() + 1
	grown = make(map[int]int)
	for i := 0; i < 100_000; i++ {
		grown[i] = i
	}
	r.Grown.Bytes = heap() - before
	r.Grown.Addr = fmt.Sprintf("%p", grown)
	r.Grown.Count = len(grown)

	before = heap()
	r.Shrunk.Line = here() + 1
	shrunk = make(map[int]int)
	for i := 0; i < 200_000; i++ {
		shrunk[i] = i
	}
	for i := 1_000; i < 200_000; i++ {
		delete(shrunk, i)
	}
	r.Shrunk.Bytes = heap() - before
	r.Shrunk.Addr = fmt.Sprintf("%p", shrunk)
	r.Shrunk.Count = len(shrunk)

	r.SmallMaps = 2_000
	small = make([]map[string]int, 0, r.SmallMaps)
	for i := 0; i < r.SmallMaps; i++ {
		r.SmallLine = here() + 1
		m := make(map[string]int)
		m["k"] = i
		small = append(small, m)
	}

	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		panic(err)
	}
	if *wait {
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	runtime.KeepAlive(grown)
	runtime.KeepAlive(shrunk)
	runtime.KeepAlive(small)
}

var early map[int]int

// madeBefore fills a map before a tracer attaches, then touches it once.
func madeBefore(n int, out string) {
	in := bufio.NewReader(os.Stdin)
	before := heap()
	early = make(map[int]int)
	for i := 0; i < n; i++ {
		early[i] = i
	}
	fmt.Println("ready")
	in.ReadString('\n')
	early[n] = n
	r := mapReport{Addr: fmt.Sprintf("%p", early), Count: len(early)}
	r.Bytes = heap() - before
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		panic(err)
	}
	fmt.Println("held")
	in.ReadString('\n')
	runtime.KeepAlive(early)
}

// memory allocates, frees and hands memory back, so the tests can compare map-trace's
// madvise, GC and RSS events with an independent record of the same run (strace) and with
// the program's own runtime.NumGC.
//
// It prints "ready" and waits for a line on stdin, so tracers can attach first.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"time"
)

var hold [][]byte

// keep is a map that grows while the heap churns, so grows can land inside GC cycles.
var keep = map[int]int{}

func main() {
	out := flag.String("out", "", "write the JSON report here")
	mib := flag.Int("mib", 200, "MiB to allocate and touch")
	flag.Parse()
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < *mib; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(j)
		}
		hold = append(hold, b)
		keep[i] = len(b)
	}
	// Long enough for several RSS samples at the peak.
	time.Sleep(1500 * time.Millisecond)
	hold = nil
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	debug.FreeOSMemory()
	time.Sleep(300 * time.Millisecond)
	runtime.ReadMemStats(&after)

	data, _ := json.Marshal(map[string]any{
		"numgc_before": before.NumGC,
		"numgc_after":  after.NumGC,
	})
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

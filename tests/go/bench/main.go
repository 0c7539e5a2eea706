// bench is the program `cargo xtask bench` traces: a timed loop of map operations, so the
// cost a tracer adds to each operation can be read off as nanoseconds per operation.
//
// Phases:
//   - hot: assigns and deletes alternate on a fixed set of string keys in a map sized up
//     front, so each operation is one runtime.mapassign_faststr or mapdelete_faststr call
//     and nothing grows or allocates;
//   - grow: assigns of int64 keys into fresh maps (no size hint) of 4096 entries each, so
//     every map goes through all its growth steps (runtime.mapassign_fast64 plus growth);
//   - hot2: two goroutines assign on their own maps as fast as they can, the highest event
//     rate this program can produce.
//
// With -wait it prints "ready" once everything is built and waits for a line on stdin,
// so a tracer can attach first. It times only the loop (start-up and attach are not in the
// number) and prints one line: result phase=… ops=… goroutines=… ns_per_op=….
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// hotKeys is a power of two, so the loop picks keys with a mask instead of a division.
const hotKeys = 1024

// growTo is how many entries each map of the grow phase reaches: past 1024, so swiss maps
// also split tables.
const growTo = 4096

// sink keeps the maps reachable, so the compiler cannot drop the operations.
var sink []map[string]int

var growSink map[int64]int

func main() {
	phase := flag.String("phase", "hot", "hot, grow or hot2")
	ops := flag.Int("ops", 200000, "map operations in total")
	wait := flag.Bool("wait", false, `print "ready" and wait for a line on stdin before the timed loop`)
	flag.Parse()

	keys := make([]string, hotKeys)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	var run func() int
	switch *phase {
	case "hot":
		m := make(map[string]int, 2*hotKeys)
		sink = append(sink, m)
		run = func() int { hot(m, keys, *ops); return 1 }
	case "grow":
		run = func() int { grow(*ops); return 1 }
	case "hot2":
		maps := []map[string]int{make(map[string]int, 2*hotKeys), make(map[string]int, 2*hotKeys)}
		sink = append(sink, maps...)
		run = func() int { hot2(maps, keys, *ops); return len(maps) }
	default:
		fmt.Fprintf(os.Stderr, "unknown phase %q\n", *phase)
		os.Exit(2)
	}

	if *wait {
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fmt.Fprintln(os.Stderr, "no start line on stdin:", err)
			os.Exit(1)
		}
	}
	start := time.Now()
	goroutines := run()
	elapsed := time.Since(start)
	fmt.Printf("result phase=%s ops=%d goroutines=%d ns_per_op=%.1f\n",
		*phase, *ops, goroutines, float64(elapsed.Nanoseconds())/float64(*ops))
}

// hot alternates an assign of one key with a delete of the key half the set away, so the
// map holds about half the keys and every operation is exactly one runtime call.
func hot(m map[string]int, keys []string, ops int) {
	for i := 0; i < ops; i++ {
		j := i >> 1
		if i&1 == 0 {
			m[keys[j&(hotKeys-1)]] = i
		} else {
			delete(m, keys[(j+hotKeys/2)&(hotKeys-1)])
		}
	}
}

func grow(ops int) {
	for done := 0; done < ops; {
		m := map[int64]int{}
		for j := 0; j < growTo && done < ops; j++ {
			m[int64(j)] = j
			done++
		}
		growSink = m
	}
}

// hot2 splits ops between two goroutines, each overwriting the keys of its own map (Go maps
// are not safe for concurrent writes).
func hot2(maps []map[string]int, keys []string, ops int) {
	var wg sync.WaitGroup
	for _, m := range maps {
		wg.Add(1)
		go func(m map[string]int) {
			defer wg.Done()
			for i := 0; i < ops/len(maps); i++ {
				m[keys[i&(hotKeys-1)]] = i
			}
		}(m)
	}
	wg.Wait()
}

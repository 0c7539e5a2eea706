// integrity hammers maps from many goroutines, each call made deep in a recursion whose
// frames are big enough that goroutine stacks grow and move while map functions run, and
// prints a checksum of everything the maps returned. The tests require the same checksum
// traced and untraced: a tracer that disturbs the program changes it, or crashes it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"sync"
)

// worker owns its maps, so the checksum does not depend on scheduling.
type worker struct {
	rng     *rand.Rand
	strs    map[string]int
	ints    map[int64]int
	sum     uint64
	assigns uint64
	deletes uint64
	clears  uint64
}

// deep makes the map call `depth` frames down; each frame holds 512 bytes, so a fresh
// goroutine's stack (8 KiB) is copied to a bigger one on the way, often mid-operation.
//
//go:noinline
func deep(depth int, w *worker, op func(*worker)) byte {
	var pad [512]byte
	pad[depth%512] = byte(depth)
	if depth > 0 {
		return deep(depth-1, w, op) + pad[(depth*7)%512]
	}
	op(w)
	return pad[0]
}

func (w *worker) step(i int) {
	k := w.rng.Intn(4096)
	key := "k" + strconv.Itoa(k)
	switch r := w.rng.Intn(100); {
	case r < 55:
		w.strs[key] += i
		w.ints[int64(k)*31] = i
		w.assigns += 2
	case r < 97:
		w.sum += uint64(w.strs[key])
		delete(w.strs, key)
		delete(w.ints, int64(k)*31)
		w.deletes += 2
	default:
		w.sum += uint64(len(w.strs))*7 + uint64(len(w.ints))
		clear(w.strs)
		clear(w.ints)
		w.clears += 2
	}
}

func (w *worker) checksum() uint64 {
	keys := make([]string, 0, len(w.strs))
	for k := range w.strs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := fnv.New64a()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%d;", k, w.strs[k])
	}
	ints := make([]int64, 0, len(w.ints))
	for k := range w.ints {
		ints = append(ints, k)
	}
	sort.Slice(ints, func(a, b int) bool { return ints[a] < ints[b] })
	for _, k := range ints {
		fmt.Fprintf(h, "%d=%d;", k, w.ints[k])
	}
	return h.Sum64() ^ w.sum
}

func main() {
	workers := flag.Int("workers", 16, "goroutines")
	steps := flag.Int("steps", 32000, "operations per goroutine, each one to three map calls")
	wait := flag.Bool("wait", false, "print ready, then wait for a line on stdin")
	flag.Parse()
	if *wait {
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	ws := make([]*worker, *workers)
	var wg sync.WaitGroup
	for g := range ws {
		w := &worker{rng: rand.New(rand.NewSource(int64(g) + 1)), strs: map[string]int{}, ints: map[int64]int{}}
		ws[g] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < *steps; i++ {
				// New goroutines every so often: fresh small stacks that must grow again.
				if i%500 == 0 {
					done := make(chan struct{})
					go func(i int) {
						deep(w.rng.Intn(64), w, func(w *worker) { w.step(i) })
						close(done)
					}(i)
					<-done
					continue
				}
				deep(w.rng.Intn(64), w, func(w *worker) { w.step(i) })
			}
		}()
	}
	wg.Wait()
	total := fnv.New64a()
	var assigns, deletes, clears uint64
	for _, w := range ws {
		fmt.Fprintf(total, "%x;", w.checksum())
		assigns += w.assigns
		deletes += w.deletes
		clears += w.clears
	}
	fmt.Printf("checksum %016x assigns %d deletes %d clears %d\n", total.Sum64(), assigns, deletes, clears)
}

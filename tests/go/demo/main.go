// demo is the program `cargo xtask demo` traces: a small in-memory service with a session
// cache that churns (assign, delete), a counter map that only grows (growth, evacuation on
// classic maps), a per-request scratch map that is cleared, and periodic memory release.
package main

import (
	"fmt"
	"math/rand"
	"os"
	"runtime/debug"
	"strconv"
	"time"
)

type Session struct {
	User    string
	Expires time.Time
	Hits    int
}

var (
	sessions = map[string]*Session{}
	counters = map[int64]uint64{}
	scratch  = map[int32]int{}
)

func main() {
	seconds := 3600
	if len(os.Args) > 1 {
		if n, err := strconv.Atoi(os.Args[1]); err == nil {
			seconds = n
		}
	}
	rng := rand.New(rand.NewSource(42))
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	next := int64(0)
	for tick := 0; time.Now().Before(deadline); tick++ {
		now := time.Now()
		// A burst of requests.
		for i := 0; i < 200; i++ {
			id := "s-" + strconv.Itoa(rng.Intn(5000))
			s, ok := sessions[id]
			if !ok {
				s = &Session{User: id}
				sessions[id] = s
			}
			s.Hits++
			s.Expires = now.Add(time.Duration(rng.Intn(2000)) * time.Millisecond)
			counters[next]++
			next++
			scratch[int32(i)] = i
		}
		clear(scratch)
		// Expire sessions: deletes never shrink the map.
		for id, s := range sessions {
			if s.Expires.Before(now) {
				delete(sessions, id)
			}
		}
		if tick%100 == 99 {
			debug.FreeOSMemory()
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(len(sessions), len(counters))
}

// procs does a known number of map assigns and deletes on one package-level map and reports
// them with its own pid and the map's header address, so the tests of many processes (go
// run, --all, short-lived processes) can check map-trace's events process by process.
//
// With -wait it first prints `ready <pid> <map>` and waits for a line on stdin, so a test can
// start it before map-trace and have every map operation happen after the attach. After the
// work it prints `done`; with -busy it then keeps working on another map, and with -hold (or
// -busy) it waits for stdin to close before exiting.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

// Package-level, made once: the header's address is the map's identity in the events.
var (
	m    map[int]int
	spin map[int]int
)

type report struct {
	Pid     int    `json:"pid"`
	Map     string `json:"map"`
	Assigns int    `json:"assigns"`
	Deletes int    `json:"deletes"`
	Len     int    `json:"len"`
}

func main() {
	n := flag.Int("n", 1000, "assigns, of distinct keys")
	d := flag.Int("d", 0, "deletes, of keys assigned before (at most -n)")
	wait := flag.Bool("wait", false, "print `ready <pid> <map>`, then wait for a line on stdin before the work")
	hold := flag.Bool("hold", false, "after the work, wait for stdin to close before exiting")
	busy := flag.Bool("busy", false, "after the work, keep assigning to another map until stdin closes")
	out := flag.String("out", "", "write the JSON report here")
	flag.Parse()
	if *d > *n {
		fmt.Fprintln(os.Stderr, "-d must be at most -n")
		os.Exit(2)
	}
	in := bufio.NewReader(os.Stdin)

	m = make(map[int]int)
	addr := fmt.Sprintf("%p", m)
	if *wait {
		fmt.Println("ready", os.Getpid(), addr)
		if _, err := in.ReadString('\n'); err != nil {
			fmt.Fprintln(os.Stderr, "stdin closed before the step:", err)
			os.Exit(1)
		}
	}

	for i := 0; i < *n; i++ {
		m[i] = i
	}
	for i := 0; i < *d; i++ {
		delete(m, i)
	}

	r := report{Pid: os.Getpid(), Map: addr, Assigns: *n, Deletes: *d, Len: len(m)}
	data, _ := json.Marshal(r)
	if *out != "" {
		// Written whole, then renamed: a reader never sees half a report.
		tmp := *out + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.Rename(tmp, *out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *wait {
		fmt.Println("done")
	}

	if *busy {
		spin = make(map[int]int)
		go func() {
			for {
				for i := 0; i < 1000; i++ {
					spin[i] = i
				}
				for k := range spin {
					delete(spin, k)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	if *hold || *busy {
		// Until stdin closes (or the test kills the process).
		for {
			if _, err := in.ReadString('\n'); err != nil {
				return
			}
		}
	}
}

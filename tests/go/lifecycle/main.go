// lifecycle does a known number of map assigns, then — as its first argument says — exits,
// waits to be killed, execs another program, or starts a child (itself, which also assigns)
// and waits for it. The tests trace it through each ending.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

var m = map[int]int{}

func work(n int) {
	for i := 0; i < n; i++ {
		m[i] = i
	}
}

func main() {
	mode := os.Args[1]
	if mode == "child" {
		work(777)
		return
	}
	// The map's header address rides on the ready line, for --map.
	fmt.Printf("ready %p\n", m)
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	work(1000)
	fmt.Println("worked", len(m))
	switch mode {
	case "exit":
	case "hang":
		in.ReadString('\n')
	case "exec":
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			panic(err)
		}
		panic(syscall.Exec(sleep, []string{"sleep", "30"}, os.Environ()))
	case "fork":
		child := exec.Command(os.Args[0], "child")
		child.Stdout = os.Stdout
		if err := child.Run(); err != nil {
			panic(err)
		}
		fmt.Println("child", strconv.Itoa(child.Process.Pid))
		in.ReadString('\n')
	}
}

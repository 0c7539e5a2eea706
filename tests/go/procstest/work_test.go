package procstest

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
)

func envInt(t *testing.T, name string) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		t.Fatalf("%s=%q: %v", name, os.Getenv(name), err)
	}
	return v
}

// TestWork does PROCS_N assigns and PROCS_D deletes on M and writes the report to
// PROCS_REPORT.
func TestWork(t *testing.T) {
	out := os.Getenv("PROCS_REPORT")
	if out == "" {
		t.Fatal("PROCS_REPORT is not set")
	}
	n, d := envInt(t, "PROCS_N"), envInt(t, "PROCS_D")
	if d > n {
		t.Fatalf("PROCS_D=%d is more than PROCS_N=%d", d, n)
	}
	M = make(map[int]int)
	addr := fmt.Sprintf("%p", M)
	Work(n, d)
	if len(M) != n-d {
		t.Fatalf("len(M) = %d, want %d", len(M), n-d)
	}
	data, _ := json.Marshal(map[string]any{
		"pid": os.Getpid(), "map": addr, "assigns": n, "deletes": d, "len": len(M),
	})
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

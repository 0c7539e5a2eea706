module procs

go 1.21

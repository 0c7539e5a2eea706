module culprit

go 1.21

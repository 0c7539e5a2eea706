module lifecycle

go 1.21

module integrity

go 1.21

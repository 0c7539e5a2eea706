module answers

go 1.21

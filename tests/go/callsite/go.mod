module callsite

go 1.21

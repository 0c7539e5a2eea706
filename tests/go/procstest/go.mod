module procstest

go 1.21

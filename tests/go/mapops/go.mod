module mapops

go 1.21

module growth

go 1.21

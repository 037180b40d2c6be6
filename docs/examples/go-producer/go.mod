module github.com/spyglass/examples/go-producer

go 1.22

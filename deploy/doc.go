// Package deploy holds no code: it is the Go module whose tests check what
// lives beside it (the Helm chart under helm/, and in time the other
// deployment files) with Helm's own Go packages. It is a module of its own
// so that the server's module, and so the nielsgpt binary, never depends on
// Helm and the Kubernetes client libraries it brings: `go test ./...` at
// the repository root does not enter this folder; `cd deploy && go test
// ./...` does (.ci/run runs both).
package deploy

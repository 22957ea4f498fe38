package main

// `nielsgpt healthcheck`: the container's HEALTHCHECK. The runtime image has
// no curl, so the binary asks its own server whether the model is ready.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func runHealthcheck(args []string) error {
	fs := newFlagSet("healthcheck", os.Stderr, "usage: nielsgpt healthcheck [--port P]\n\n"+
		"Exits 0 when the server on this host answers /health with its model ready\n"+
		"(for container health checks, which have no curl).\n\n")
	defaultPort := os.Getenv("API_PORT")
	if defaultPort == "" {
		defaultPort = "8000"
	}
	port := fs.String("port", defaultPort, "the server's port on this host")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort("127.0.0.1", *port) + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var health struct {
		OK         bool `json:"ok"`
		ModelReady bool `json:"model_ready"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&health); err != nil {
		return fmt.Errorf("reading /health: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !health.OK || !health.ModelReady {
		return fmt.Errorf("not ready: status %d, ok %v, model_ready %v", resp.StatusCode, health.OK, health.ModelReady)
	}
	return nil
}

//go:build !backendmodules

package engine

import (
	"testing"

	"nielsgpt/internal/testkit"
)

// TestMain removes what testkit made for the tests; with the tag
// backendmodules, modules_test.go's TestMain does, after loading the modules.
func TestMain(m *testing.M) { testkit.Main(m) }

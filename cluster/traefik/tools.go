//go:build tools

// The Traefik program the own cluster runs as its Ingress controller; listed so that
// `go mod tidy` keeps its dependencies.
package tools

import (
	_ "github.com/traefik/traefik/v3/cmd/traefik"
)

// Package deploy holds no code: it owns sessiongate's deployment
// configuration (kubernetes/, compose/, istio/ here, plus the Dockerfile and
// envoy/examples/envoy.yaml) and the tests that prove it valid. The tests
// parse every file against the real schemas where a Go library has them
// (Envoy's v3 Bootstrap, Istio's MeshConfig and AuthorizationPolicy), check
// that the pieces agree with each other and with the binary (ports, paths,
// users, names), and run the binary, built the way the Dockerfile builds it,
// on the configuration: `sessiongate validate` on the policies, `serve` with
// the manifests' environment answering the probes and the HEALTHCHECK.
package deploy

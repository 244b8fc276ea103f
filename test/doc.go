// Package test holds sessiongate's black-box tests: they build the real
// binary once per run, start it as a subprocess on loopback ports with a
// policy directory written by each test, and play Envoy over real gRPC with
// a browser-like cookie jar. Nothing here imports the product's internals
// except the test identity provider (idp) that mints tokens.
package test

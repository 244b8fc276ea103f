// Package envoy adapts Envoy's ext_authz v3 gRPC protocol to the authz
// engine: pure translation functions between CheckRequest/CheckResponse and
// authz.Request/authz.Decision, and the gRPC server wiring (health, keepalive
// compatible with Envoy, message limits, graceful stop). An example Envoy
// configuration lives beside it in examples/; Istio, Kubernetes and Compose
// files are in deploy/.
package envoy

// Package envoy adapts Envoy's ext_authz v3 gRPC protocol to the authz
// engine: pure translation functions between CheckRequest/CheckResponse and
// authz.Request/authz.Decision, and the gRPC server wiring (health, keepalive
// compatible with Envoy, message limits, graceful stop). Example Envoy, Istio
// and Kubernetes configuration lives beside it in examples/.
package envoy

// Package forwardauth adapts HTTP forward-auth to the authz engine, for
// proxies that ask an HTTP endpoint instead of speaking ext_authz gRPC:
// Envoy's HTTP ext_authz service, nginx auth_request, Caddy forward_auth and
// Traefik forwardAuth. It owns pure translation functions between
// *http.Request and authz.Request and between authz.Decision and an HTTP
// response, which proxy headers are believed (only from trusted proxy
// addresses), and the http.Handler that serves the endpoints below
// PathPrefix. Ready-to-use proxy configuration lives beside it in examples/.
package forwardauth

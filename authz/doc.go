// Package authz owns sessiongate's domain: the request and decision types, the
// closed set of reasons, compiled per-host policies, session records and the
// Engine that applies the security invariants S1–S11 of the design. It depends
// on the standard library only; token verification, session storage and the
// Envoy/HTTP adapters plug in through the small interfaces declared here.
package authz

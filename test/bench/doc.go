// Package bench holds benchmarks of sessiongate's decision with its real
// parts, wired as `sessiongate serve` wires them: policies loaded from a
// directory, the RS256 token verifier with its verified-token cache, the
// embedded session store, Prometheus metrics and the audit log; and the
// whole server path over gRPC on loopback, for profiles. It has no code
// outside its tests.
package bench

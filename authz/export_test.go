package authz

// NewFakeStore exports the engine tests' fake store to the external test
// package, which runs the store conformance suite against it.
func NewFakeStore(c Clock) Store {
	m := newMemStore(nil)
	m.clock = c
	return m
}

package bench

import (
	"runtime/debug"
	"testing"
	"unsafe"
)

// grpcFrames is the stack that grpc-go (v1.85) has in use on its handler
// goroutine when the server decides a request: serveStreams' closure,
// handleStream, processRPC, the unary wrapper and the server's handler.
// Service.Check, which the loop calls, decides as the server's handler
// (Service.checkWire) does: the engine's Check, then the answer out of
// line.
const grpcFrames = 1536

// primedStack is the stack that handler goroutine has when it decides: it
// starts at 2 KiB, and the server's handler grows it to 16 KiB before it
// receives the request (envoy's growStack, handlerStack).
const primedStack = 16 << 10

// BenchmarkStack is the stack a check needs: gRPC runs each request on a
// fresh goroutine, and when the deepest call of a check does not fit in
// what that goroutine's stack has left, the runtime allocates one twice the
// size and copies the stack over, frame by frame — several microseconds, on
// every request. It reports stack-B, the bytes of stack Service.Check needs
// (its deepest call, with the runtime's guard), and stack-copies/op, how
// often a check copied the stack when called as gRPC calls it; the loop
// runs checks that way, on fresh goroutines. stack-copies/op must stay 0:
// with 16 KiB, a check has primedStack-grpcFrames bytes.
func BenchmarkStack(b *testing.B) {
	for _, c := range serviceCases(b) {
		b.Run(c.name, func(b *testing.B) {
			check := c.service(b)
			for range 10 {
				check() // first calls may take paths (lazy set-ups) later ones do not
			}
			// A collection may shrink a goroutine's stack between priming
			// and the call: none during the probes.
			defer debug.SetGCPercent(debug.SetGCPercent(-1))
			need := stackNeed(check)
			copies := 0
			for b.Loop() {
				if copiesStack(grpcFrames, check) {
					copies++
				}
			}
			b.ReportMetric(float64(need), "stack-B")
			b.ReportMetric(float64(copies)/float64(b.N), "stack-copies/op")
		})
	}
}

// stackNeed is the stack f needs, guard included: primedStack less the
// most that can be in use when f is called without f's copying the stack.
func stackNeed(f func()) int {
	lo, hi := 0, primedStack // copiesStack(lo, f) is false, copiesStack(hi, f) true
	if copiesStack(lo, f) {
		return primedStack
	}
	for hi-lo > 8 {
		mid := (lo + hi) / 2
		if copiesStack(mid, f) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return primedStack - lo
}

// copiesStack calls f on a new goroutine whose stack has grown to
// primedStack, with inUse bytes of it in use, and reports whether the
// runtime copied the stack meanwhile: a copy moves every frame, so the
// address of a variable of the goroutine's first frame changes.
func copiesStack(inUse int, f func()) bool {
	done := make(chan bool)
	go func() {
		prime()
		var top byte
		at := uintptr(unsafe.Pointer(&top))
		burn(at, inUse, f)
		done <- uintptr(unsafe.Pointer(&top)) != at
	}()
	return <-done
}

var sink byte

// prime grows the calling goroutine's stack from 2 KiB to primedStack: its
// frame does not fit in half of it.
//
//go:noinline
func prime() {
	var a [primedStack - 4<<10]byte
	a[sink] = 1
	sink = a[len(a)-1-int(sink)]
}

// burn recurses until the stack in use below top is at least inUse bytes,
// then calls f.
//
//go:noinline
func burn(top uintptr, inUse int, f func()) {
	var here byte
	if int(top-uintptr(unsafe.Pointer(&here))) >= inUse {
		f()
		return
	}
	burn(top, inUse, f)
}

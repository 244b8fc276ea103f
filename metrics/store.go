package metrics

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

// InstrumentStore counts every operation of s and its failures. Counters are
// resolved once here, not per request. A store with a local fallback (the
// near cache of a shared store) keeps offering it, uncounted: the counters
// are about the store of record, and wrapping must not turn fail-open off.
func InstrumentStore(s authz.Store, m *Metrics) authz.Store {
	op := func(name string) opCounters {
		return opCounters{m.storeOps.WithLabelValues(name), m.storeErrors.WithLabelValues(name)}
	}
	i := &store{s: s, load: op("load"), begin: op("begin"), touch: op("touch"), end: op("end"), claim: op("claim")}
	if fb, ok := s.(authz.FallbackStore); ok {
		return &fallbackStore{store: i, fb: fb}
	}
	return i
}

type fallbackStore struct {
	*store
	fb authz.FallbackStore
}

func (f *fallbackStore) Fallback() authz.Store { return f.fb.Fallback() }

// Confirmed counts like the store it wraps: confirmed reads go to the store
// of record.
func (f *fallbackStore) Confirmed() authz.Store {
	c := *f.store
	c.s = f.fb.Confirmed()
	return &c
}

type opCounters struct{ ops, errs prometheus.Counter }

func (o opCounters) count(err error) {
	o.ops.Inc()
	if err != nil {
		o.errs.Inc()
	}
}

type store struct {
	s                              authz.Store
	load, begin, touch, end, claim opCounters
}

// Load has named results, assigned in place: a copy of the lookup in this
// frame would deepen every check's stack (authz.Engine says why that costs).
func (i *store) Load(ctx context.Context, policy, id string, scope authz.Digest) (lk authz.Lookup, err error) {
	lk, err = i.s.Load(ctx, policy, id, scope)
	i.load.count(err)
	return
}

func (i *store) Begin(ctx context.Context, s *authz.Session) error {
	err := i.s.Begin(ctx, s)
	i.begin.count(err)
	return err
}

func (i *store) Touch(ctx context.Context, policy, id string, t authz.Touch) (authz.Session, bool, error) {
	s, found, err := i.s.Touch(ctx, policy, id, t)
	i.touch.count(err)
	return s, found, err
}

func (i *store) End(ctx context.Context, policy, id string, scope authz.Digest, e authz.End) (authz.Session, bool, error) {
	s, ended, err := i.s.End(ctx, policy, id, scope, e)
	i.end.count(err)
	return s, ended, err
}

func (i *store) Claim(ctx context.Context, key authz.Digest, keepUntil int64) (bool, error) {
	first, err := i.s.Claim(ctx, key, keepUntil)
	i.claim.count(err)
	return first, err
}

func (i *store) Ready(ctx context.Context) error { return i.s.Ready(ctx) }

var _ authz.SessionIndex = (*store)(nil)

// Indexed implements authz.SessionIndex for a store that has one (both of
// sessiongate's stores do), uncounted: ends decided outside a request (S18,
// S19) go through the wrapper, so their End and Claim calls are counted like
// the engine's.
func (i *store) Indexed(ctx context.Context, policy string, key authz.Digest) ([]authz.Session, error) {
	ix, err := i.index()
	if err != nil {
		return nil, err
	}
	return ix.Indexed(ctx, policy, key)
}

// Sessions implements authz.SessionIndex, as Indexed does.
func (i *store) Sessions(ctx context.Context, policy string, fn func(authz.Session) error) error {
	ix, err := i.index()
	if err != nil {
		return err
	}
	return ix.Sessions(ctx, policy, fn)
}

func (i *store) index() (authz.SessionIndex, error) {
	ix, ok := i.s.(authz.SessionIndex)
	if !ok {
		return nil, fmt.Errorf("the store cannot find sessions by user (%T)", i.s)
	}
	return ix, nil
}

// NewStateFileWritable is sessiongate_state_file_writable, for a store with
// a state file (--state-file): 1 while it can be written, 0 while it cannot
// (a full disk, an I/O error), when ends are refused with store_unavailable.
// err reports why it cannot, nil while it can.
func NewStateFileWritable(err func() error) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "state_file_writable",
		Help: "1 while the state file can be written; 0 while it cannot and session ends are refused (store_unavailable)."},
		func() float64 { return b2f(err() == nil) })
}

// DataLoss is what a shared store tells of the data its backend lost.
type DataLoss interface {
	DataLosses() int64 // times the backend was found to have lost data
	Reasserted() int64 // ends found missing in the backend and written again
}

// NewDataLoss exports sessiongate_store_data_losses_total and
// sessiongate_store_ends_reasserted_total from d, or zeros when d is nil
// (a store without a backend that can lose data), so that alerts and
// dashboards find the series everywhere.
func NewDataLoss(d DataLoss) []prometheus.Collector {
	get := func(f func() int64) func() float64 {
		return func() float64 {
			if d == nil {
				return 0
			}
			return float64(f())
		}
	}
	var losses, reasserted func() int64
	if d != nil {
		losses, reasserted = d.DataLosses, d.Reasserted
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "store_data_losses_total",
			Help: "Times the shared store (Redis) was found to have lost data: its marker key gone or changed (a restart without persistence, FLUSHALL, a failover to a replica without the latest writes)."},
			get(losses)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "store_ends_reasserted_total",
			Help: "Session ends this replica knew and found missing in the shared store, written again so that they stay in force."},
			get(reasserted)),
	}
}

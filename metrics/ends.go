package metrics

import "github.com/prometheus/client_golang/prometheus"

// Ends decided outside a request: back-channel logouts (S18) by result and
// administration calls (S19) by operation and result. The ended sessions
// themselves are counted in sessions_ended_total{cause="idp_logout"|"admin"}.

// BackChannelResults are the result label values of backchannel_logouts_total.
func BackChannelResults() []string {
	return []string{"ok", "invalid_request", "invalid_token", "invalid_claim", "expired", "replayed",
		"unknown_client", "keys_unavailable", "store_unavailable"}
}

// AdminOperations and AdminResults are the label values of admin_requests_total.
func AdminOperations() []string { return []string{"list", "end"} }

// AdminResults: ok, or why the call was refused or failed.
func AdminResults() []string {
	return []string{"ok", "unauthorized", "invalid_request", "not_found", "store_unavailable"}
}

type endsMetrics struct {
	backChannel *prometheus.CounterVec
	admin       *prometheus.CounterVec
}

func newEndsMetrics() endsMetrics {
	return endsMetrics{
		backChannel: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backchannel_logouts_total",
			Help: "Back-channel logout requests by result: ok (the logout token was valid; its sessions ended), or why it was refused."},
			[]string{"result"}),
		admin: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "admin_requests_total",
			Help: "Administration API calls by operation (list, end) and result."}, []string{"operation", "result"}),
	}
}

func (e endsMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(e.backChannel, e.admin)
	for _, r := range BackChannelResults() {
		e.backChannel.WithLabelValues(r)
	}
	for _, op := range AdminOperations() {
		for _, r := range AdminResults() {
			e.admin.WithLabelValues(op, r)
		}
	}
}

// BackChannelLogout counts one back-channel logout request.
func (m *Metrics) BackChannelLogout(result string) { m.ends.backChannel.WithLabelValues(result).Inc() }

// AdminRequest counts one administration call.
func (m *Metrics) AdminRequest(operation, result string) {
	m.ends.admin.WithLabelValues(operation, result).Inc()
}

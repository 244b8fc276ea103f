package authz

import "context"

var _ SessionIndex = (*memStore)(nil)

// Indexed implements SessionIndex by walking the fake's sessions.
func (m *memStore) Indexed(_ context.Context, policy string, key Digest) ([]Session, error) {
	var out []Session
	err := m.Sessions(context.Background(), policy, func(s Session) error {
		if k := IndexKeys(&s); k[0] == key || k[1] == key {
			out = append(out, s)
		}
		return nil
	})
	return out, err
}

// Sessions implements SessionIndex.
func (m *memStore) Sessions(_ context.Context, policy string, fn func(Session) error) error {
	m.mu.Lock()
	var list []Session
	for k := range m.sessions {
		if policy == "" || k.policy == policy {
			if s, ok := m.session(k.policy, k.id); ok {
				list = append(list, s)
			}
		}
	}
	err := m.failing("load")
	m.mu.Unlock()
	if err != nil {
		return err
	}
	for _, s := range list {
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

package memory

import (
	"path/filepath"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/authz/storetest"
)

func corrupt(s authz.Store, policy, id string) {
	_ = s.(*Store).hot.Set(sessionKey(policy, id), []byte("\xffnot a record"))
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func() authz.Store {
		s, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, storetest.Corrupt(corrupt))
}

// TestConformanceWithStateFile: the same promises with the state file, and
// across a restart on it.
func TestConformanceWithStateFile(t *testing.T) {
	storetest.Run(t, func() authz.Store {
		path := filepath.Join(t.TempDir(), "state")
		s, err := New(Options{StateFile: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, storetest.Corrupt(corrupt), storetest.Restart(func(old authz.Store) authz.Store {
		st := old.(*Store)
		path := st.state.path
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := New(Options{StateFile: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}))
}

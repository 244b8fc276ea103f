package authz_test

import (
	"testing"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/authz/storetest"
)

// TestFakeStoreConformance: the engine's tests rely on their fake keeping
// the same promises as the real stores.
func TestFakeStoreConformance(t *testing.T) {
	storetest.Run(t, func() authz.Store { return authz.NewFakeStore(authz.SystemClock{}) })
}

package server

import (
	"github.com/comfyui-auth/comfyui-auth/hashstore"
)

// storeUsers answers middleware.UserDirectory from the credentials loaded
// now.
type storeUsers struct{ store *hashstore.Store }

// HasUser reports whether name is a named user of the loaded credentials.
func (u storeUsers) HasUser(name string) bool {
	snap := u.store.Snapshot()
	return snap != nil && snap.HasUser(name)
}

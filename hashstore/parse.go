package hashstore

import "errors"

// Parse reads a credential file's bytes. See the helper contract.
// STUB: replaced by the hashstore implementation.
func Parse(data []byte) (Credentials, error) {
	return Credentials{}, errors.New("hashstore: Parse not implemented")
}

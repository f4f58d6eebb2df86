// Package durability holds crash tests: a server under write load is killed
// with SIGKILL and restarted on the same data directory, and every write it
// had acknowledged must still be there.
//
// The server binary comes from $RSETCD_BIN; the tests skip when it is unset.
package durability

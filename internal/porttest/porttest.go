// Package porttest finds loopback TCP ports for the servers tests start
// (redis-server, slurmctld, slurmd), which are given a port number rather
// than a listener.
//
// The port is drawn below the kernel's ephemeral range (32768–60999 by
// default): a port the kernel picked for "127.0.0.1:0" is free only until
// the listener closes, and until the server binds it any outgoing
// connection of the busy test run may take it as its local port. Below
// that range only another server can, and the draw is random so that
// parallel test packages rarely try the same one.
package porttest

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
)

// The range drawn from: [low, high).
const (
	low  = 20000
	high = 32768
)

// Free returns a loopback port no one listens on now whose port+offset
// is free too when offset is not 0 (Redis Cluster's bus port is +10000).
// The draw keeps port+offset below the ephemeral range as well.
func Free(offset int) (int, error) {
	for range 100 {
		p := low + rand.IntN(high-low-offset)
		if free(p) && (offset == 0 || free(p+offset)) {
			return p, nil
		}
	}
	return 0, errors.New("porttest: no free loopback port found below the ephemeral range")
}

func free(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

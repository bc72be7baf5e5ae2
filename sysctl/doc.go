// Package sysctl holds the host tuning that wsbridge needs on bare-metal Linux to hold
// hundreds of thousands of idle WebSocket connections, and the two checks the bridge runs at
// start.
//
// The folder holds more than Go:
//
//   - 99-wsbridge.conf is a commented /etc/sysctl.d fragment. Every value says why it is
//     there.
//   - wsbridge-limits.conf is an /etc/security/limits.d fragment for the open-file limit of
//     login sessions.
//   - wsbridge.service is a hardened systemd unit. wsbridge.default is its EnvironmentFile.
//   - tune is a bash script. "tune check --connections N" compares the host with values
//     computed for N and prints how many connections the host can carry. "tune apply" writes
//     and loads the fragments with those values. "tune revert" undoes exactly what apply
//     changed.
//
// docs/tuning.md explains how to use them.
//
// The Go side is small. At start, the bridge calls [RaiseNoFile] to lift its soft
// RLIMIT_NOFILE to the hard limit, then [Check] with -max-conns, and logs each warning that
// Check returns. Neither function changes kernel settings: a process should not retune its
// host. Both read only the calling process's limits and /proc/sys. They are safe to call
// from any goroutine.
package sysctl

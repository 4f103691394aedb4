//go:build !linux

package pgcluster

// tmpfsFree is 0 off Linux: clusters stay in the temp dir.
func tmpfsFree(string) uint64 { return 0 }

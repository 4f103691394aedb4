package pgcluster

import "syscall"

// tmpfsMagic is statfs's f_type of a tmpfs (linux/magic.h).
const tmpfsMagic = 0x01021994

// tmpfsFree returns the bytes free to this process in dir when dir is a
// tmpfs, else 0.
func tmpfsFree(dir string) uint64 {
	var fs syscall.Statfs_t
	if syscall.Statfs(dir, &fs) != nil || fs.Type != tmpfsMagic {
		return 0
	}
	return fs.Bavail * uint64(fs.Bsize)
}

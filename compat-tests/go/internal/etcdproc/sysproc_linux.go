package etcdproc

import "syscall"

// sysProcAttr makes the kernel kill the server if the test process dies
// first, so no server outlives an aborted test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

package auth

import "syscall"

// sysProcAttr makes the kernel kill a server Restart started if the test
// process dies first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

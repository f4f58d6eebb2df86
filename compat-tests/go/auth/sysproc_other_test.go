//go:build !linux

package auth

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

package etcdproc

import (
	"fmt"
	"os"
	"path/filepath"
)

// RefBinEnv names the environment variable holding the reference etcd
// binary (etcd v3.6.16) that differential tests compare rsetcd with.
const RefBinEnv = "REF_ETCD_BIN"

// RefBin returns $REF_ETCD_BIN or, when it is unset,
// <repo>/.cache/reference/bin/etcd, where <repo> is the nearest directory
// above the working directory holding Cargo.toml. The error says how to get
// one when neither exists.
func RefBin() (string, error) {
	if bin := os.Getenv(RefBinEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s=%s: %w", RefBinEnv, bin, err)
		}
		return bin, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "Cargo.toml")); err == nil {
			bin := filepath.Join(dir, ".cache", "reference", "bin", "etcd")
			if _, err := os.Stat(bin); err != nil {
				return "", fmt.Errorf("reference etcd not found at %s (%v): build etcd v3.6.16 there (scripts/build-reference.sh) or set %s", bin, err, RefBinEnv)
			}
			return bin, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no Cargo.toml above %s to locate the reference etcd: set %s", wd, RefBinEnv)
		}
	}
}

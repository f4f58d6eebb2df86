// Package descriptor holds a test that checks rsetcd's proto/ files against
// the descriptors compiled into etcd's own Go packages (etcd v3.6.16).
//
// Only the wire contract is compared: packages, messages (nested ones too),
// fields (name, number, type, label, referenced type, oneof), enums and their
// values, services and their methods. Options, comments, json_name and file
// names are ignored.
package descriptor

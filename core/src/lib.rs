//! The pure heart of calico-rs: the v1 data model, validation, the key codec and the policy
//! compiler. No async, no I/O, no tokio/etcd/sled/netlink: inputs and outputs are plain data.

//! Fails the build early, naming the Debian package, when etcd-client's build would fail deep
//! inside protoc: it needs `protoc` and the well-known `google/protobuf/*.proto` files.
//! This crate has no dependencies, so Cargo builds and runs this script seconds before
//! etcd-client's (which first compiles prost-build), and stops the build when it fails.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-env-changed=PROTOC_INCLUDE");
    let protoc_found = std::env::var_os("PROTOC").is_some()
        || std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("protoc").is_file())
        });
    let include = std::env::var_os("PROTOC_INCLUDE").unwrap_or_else(|| "/usr/include".into());
    let descriptor = Path::new(&include).join("google/protobuf/descriptor.proto");
    let mut missing = Vec::new();
    if !protoc_found {
        missing.push("protobuf-compiler (protoc)");
    }
    if !descriptor.is_file() {
        missing.push("libprotobuf-dev (google/protobuf/descriptor.proto)");
    }
    if !missing.is_empty() {
        panic!(
            "etcd-client's build needs {}: run scripts/install-deps build \
             (or apt-get install --no-install-recommends protobuf-compiler libprotobuf-dev)",
            missing.join(" and ")
        );
    }
}

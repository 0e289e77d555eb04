//! Sysctls by reading and writing `/proc/sys/...` (like `sysctl -w`), in the network
//! namespace of the calling thread.
//!
//! A key's dots become slashes, except inside the interface name of a per-interface key
//! (`net.ipv4.conf.<iface>.<leaf>`, `net.ipv4.neigh.<iface>.<leaf>`, same for ipv6): interface
//! names may contain dots (`eth0.100`), the leaf never does.

use std::path::{Path, PathBuf};

use crate::DataplaneError;

const PER_INTERFACE: [&str; 4] = [
    "net.ipv4.conf.",
    "net.ipv6.conf.",
    "net.ipv4.neigh.",
    "net.ipv6.neigh.",
];

/// The file under the sysctl root holding `key`, or `None` for a key that could leave it
/// (a `/`, an empty or `..` component).
pub fn sysctl_relative_path(key: &str) -> Option<PathBuf> {
    if key.contains('/') || key.contains('\0') {
        return None;
    }
    let parts: Vec<String> = match PER_INTERFACE.iter().find(|p| key.starts_with(*p)) {
        Some(prefix) => {
            let rest = key.get(prefix.len()..)?;
            let (iface, leaf) = rest.rsplit_once('.')?;
            let mut parts: Vec<String> = prefix
                .trim_end_matches('.')
                .split('.')
                .map(str::to_string)
                .collect();
            parts.push(iface.to_string());
            parts.push(leaf.to_string());
            parts
        }
        None => key.split('.').map(str::to_string).collect(),
    };
    if parts.iter().any(|p| p.is_empty() || p == "." || p == "..") {
        return None;
    }
    Some(parts.iter().collect())
}

/// Outcome of setting one sysctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlWrite {
    /// It already held the value.
    Unchanged,
    Written,
    /// The file does not exist (the interface is not there yet): retried next apply.
    Missing,
}

/// Sysctls under one root (`/proc/sys` on a host; a temp dir in unit tests).
#[derive(Debug, Clone)]
pub struct Sysctls {
    root: PathBuf,
}

impl Default for Sysctls {
    fn default() -> Self {
        Sysctls {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl Sysctls {
    /// Sysctls under `root` instead of `/proc/sys`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Sysctls { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, DataplaneError> {
        sysctl_relative_path(key)
            .map(|rel| self.root.join(rel))
            .ok_or_else(|| DataplaneError::Kernel {
                operation: format!("setting sysctl {key}"),
                reason: "not a valid sysctl name".to_string(),
            })
    }

    /// The current value (trimmed), `None` when the key does not exist.
    pub fn get(&self, key: &str) -> Option<String> {
        let path = self.path(key).ok()?;
        std::fs::read_to_string(path)
            .ok()
            .map(|v| v.trim().to_string())
    }

    /// Like `sysctl -w key=value`, skipping the write when the value is already there.
    ///
    /// # Errors
    /// A bad key, or a write the kernel refused, naming the key.
    pub fn set(&self, key: &str, value: &str) -> Result<SysctlWrite, DataplaneError> {
        let path = self.path(key)?;
        if !Path::new(&path).exists() {
            return Ok(SysctlWrite::Missing);
        }
        if self.get(key).as_deref() == Some(value) {
            return Ok(SysctlWrite::Unchanged);
        }
        std::fs::write(&path, format!("{value}\n")).map_err(|source| DataplaneError::Io {
            operation: format!("setting sysctl {key}={value}"),
            source,
        })?;
        Ok(SysctlWrite::Written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_keep_their_dots() {
        assert_eq!(
            sysctl_relative_path("net.ipv4.conf.eth0.100.rp_filter"),
            Some(PathBuf::from("net/ipv4/conf/eth0.100/rp_filter"))
        );
        assert_eq!(
            sysctl_relative_path("net.ipv4.neigh.cali12.proxy_delay"),
            Some(PathBuf::from("net/ipv4/neigh/cali12/proxy_delay"))
        );
        assert_eq!(
            sysctl_relative_path("net.ipv4.ip_forward"),
            Some(PathBuf::from("net/ipv4/ip_forward"))
        );
        assert_eq!(sysctl_relative_path("net.ipv4.conf.../x"), None);
        assert_eq!(sysctl_relative_path("net.ipv4.conf...rp_filter"), None);
        assert_eq!(sysctl_relative_path("net..ipv4"), None);
    }

    #[test]
    fn set_writes_once_and_reports_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net/ipv4/conf/cali1");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("proxy_arp"), "0\n").unwrap();
        let s = Sysctls::with_root(dir.path());
        let key = "net.ipv4.conf.cali1.proxy_arp";
        assert_eq!(s.set(key, "1").unwrap(), SysctlWrite::Written);
        assert_eq!(s.get(key).as_deref(), Some("1"));
        assert_eq!(s.set(key, "1").unwrap(), SysctlWrite::Unchanged);
        assert_eq!(
            s.set("net.ipv4.conf.cali2.proxy_arp", "1").unwrap(),
            SysctlWrite::Missing
        );
        let err = s.set("net..x", "1").unwrap_err();
        assert!(err.to_string().contains("net..x"), "{err}");
    }
}

//! `calicoctl checksystem` (reference 2.9): are the tools and kernel modules the node agent
//! needs present?

use std::path::{Path, PathBuf};

use super::{no_more, Args, CtlError};

/// Executables the Linux dataplane runs.
pub const TOOLS: &[&str] = &["iptables-restore", "ipset", "ip", "bird"];
/// Kernel modules that must be loaded, loadable or built in.
pub const MODULES: &[&str] = &["xt_set", "ip6_tables"];

/// Where to look; the real system by default, a fake root in tests.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub path_dirs: Vec<PathBuf>,
    pub proc_modules: PathBuf,
    pub modules_dir: PathBuf,
}

impl SystemPaths {
    /// `$PATH` (plus the sbin directories), `/proc/modules`, `/lib/modules/<release>`.
    pub fn from_system() -> Self {
        let mut path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for extra in ["/sbin", "/usr/sbin", "/usr/local/sbin"] {
            path_dirs.push(PathBuf::from(extra));
        }
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        SystemPaths {
            path_dirs,
            proc_modules: PathBuf::from("/proc/modules"),
            modules_dir: Path::new("/lib/modules").join(release.trim()),
        }
    }
}

/// Every problem found, empty when the system is fine.
pub fn check(paths: &SystemPaths) -> Vec<String> {
    let mut problems = Vec::new();
    for tool in TOOLS {
        if !paths.path_dirs.iter().any(|d| d.join(tool).is_file()) {
            problems.push(format!("{tool} not found in PATH"));
        }
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let loaded = read(&paths.proc_modules);
    let dep = read(&paths.modules_dir.join("modules.dep"));
    let builtin = read(&paths.modules_dir.join("modules.builtin"));
    for module in MODULES {
        let is_loaded = loaded
            .lines()
            .any(|l| l.split_whitespace().next() == Some(module));
        let file = format!("/{module}.ko");
        let available = dep
            .lines()
            .chain(builtin.lines())
            .any(|l| l.split(':').next().is_some_and(|p| p.contains(&file)));
        if !is_loaded && !available {
            problems.push(format!(
                "kernel module {module} is neither loaded nor available"
            ));
        }
    }
    problems
}

pub(crate) fn run(a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    no_more(rest)?;
    a.allow(&["fix", "libnetwork"])?;
    let problems = check(&SystemPaths::from_system());
    if problems.is_empty() {
        Ok("System meets minimum requirements to run Calico!\n".to_string())
    } else {
        Err(CtlError::CheckSystem { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_and_modules_are_named() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for t in ["iptables-restore", "ipset", "ip"] {
            std::fs::write(bin.join(t), "").unwrap();
        }
        let mods = root.path().join("mods");
        std::fs::create_dir_all(&mods).unwrap();
        std::fs::write(
            mods.join("modules.dep"),
            "kernel/net/netfilter/xt_set.ko: kernel/net/netfilter/ipset/ip_set.ko\n",
        )
        .unwrap();
        let paths = SystemPaths {
            path_dirs: vec![bin],
            proc_modules: root.path().join("proc_modules"),
            modules_dir: mods,
        };
        assert_eq!(
            check(&paths),
            vec![
                "bird not found in PATH".to_string(),
                "kernel module ip6_tables is neither loaded nor available".to_string()
            ]
        );
    }
}

//! [`LinuxCluster`]: the namespaces, the etcd and the hosts of one scenario run on this
//! machine's kernel.
//!
//! ```text
//!   calirs-<pid>-wire: br0 172.31.250.254/24, etcd on 172.31.250.254:23790
//!        │ w0            │ w1
//!   calirs-<pid>-host1  calirs-<pid>-host2     eth0 = the host's address, calico-node, BIRD
//!        │ cali...       │ cali...
//!   workload_A          workload_B             eth1 = the workload's address (calicoctl)
//! ```
//!
//! The etcd ports are fixed and non-default; they are free because the wire namespace is new.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::netns::{self, Netns};
use super::LinuxError;

/// The bridge's MAC: locally administered, and fixed (see [`LinuxCluster::new`]).
const BRIDGE_MAC: &str = "02:ca:11:c0:00:fe";

/// The bridge's address in the wire namespace; etcd listens here.
pub const WIRE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 250, 254);
/// etcd's client port (not the default 2379).
pub const ETCD_CLIENT_PORT: u16 = 23790;
/// etcd's peer port (not the default 2380).
pub const ETCD_PEER_PORT: u16 = 23800;
/// How long etcd may take to serve its first request.
const ETCD_READY: Duration = Duration::from_secs(20);

/// The programs a cluster runs.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `calicoctl`; `calico-node` must sit next to it (calicoctl starts it from there).
    pub calicoctl: PathBuf,
    /// `calico-sim` itself, for `probe listen|connect`.
    pub probe_exe: PathBuf,
    /// Prefix of the namespaces this run names itself (`calirs-<pid>-`).
    pub prefix: String,
}

impl ClusterConfig {
    /// Tools next to `exe` (the `calico-sim` binary) or in its parent directory (a test
    /// binary under `target/<profile>/deps`).
    ///
    /// # Errors
    /// `Missing` naming the binary and how to build it.
    pub fn next_to(exe: &Path) -> Result<ClusterConfig, LinuxError> {
        let dir = exe.parent().unwrap_or(Path::new("."));
        let find = |name: &str| {
            [dir.to_path_buf(), dir.join("..")]
                .into_iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| LinuxError::Missing {
                    what: format!("{name} next to {}", exe.display()),
                    hint: "build it with `cargo build -p calico-cli --bins`".into(),
                })
        };
        let calicoctl = find("calicoctl")?;
        let node = calicoctl.with_file_name("calico-node");
        if !node.is_file() {
            return Err(LinuxError::Missing {
                what: format!("calico-node next to {}", calicoctl.display()),
                hint: "build it with `cargo build -p calico-cli --bins`".into(),
            });
        }
        Ok(ClusterConfig {
            calicoctl,
            probe_exe: exe.to_path_buf(),
            prefix: format!("calirs-{}-", std::process::id()),
        })
    }

    /// [`ClusterConfig::next_to`] the running executable.
    ///
    /// # Errors
    /// As `next_to`, or when the executable's path is unknown.
    pub fn discover() -> Result<ClusterConfig, LinuxError> {
        let exe = std::env::current_exe().map_err(|reason| LinuxError::Io {
            what: "finding the current executable".into(),
            reason,
        })?;
        ClusterConfig::next_to(&exe)
    }
}

/// One host: its namespace, addresses and data dir (`CALICO_DATA_DIR` of its calicoctl).
#[derive(Debug)]
struct Host {
    ns: Netns,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    data_dir: PathBuf,
}

/// One `external` machine: a namespace on the wire holding one address, and nothing else.
#[derive(Debug)]
struct External {
    ns: Netns,
    ip: IpAddr,
}

/// One workload namespace and the host it belongs to.
#[derive(Debug)]
struct Workload {
    host: String,
    ns: Netns,
}

/// What a calicoctl process did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A cluster of namespaced hosts sharing one etcd; torn down on drop.
#[derive(Debug)]
pub struct LinuxCluster {
    config: ClusterConfig,
    temp: tempfile::TempDir,
    wire: Option<Netns>,
    etcd: Option<Child>,
    hosts: BTreeMap<String, Host>,
    externals: BTreeMap<String, External>,
    workloads: BTreeMap<String, Workload>,
    /// Veths made to the bridge so far (`w0`, `w1`, ...).
    links: usize,
}

impl LinuxCluster {
    /// Creates the wire namespace and its bridge and starts etcd in it, waiting until it
    /// serves. On error, everything made so far is removed.
    ///
    /// # Errors
    /// A namespace that exists, a failing tool, or etcd not becoming ready.
    pub fn new(config: ClusterConfig) -> Result<LinuxCluster, LinuxError> {
        let temp = tempfile::Builder::new()
            .prefix("calico-sim-linux-")
            .tempdir()
            .map_err(|reason| LinuxError::Io {
                what: "creating a temporary directory".into(),
                reason,
            })?;
        let mut cluster = LinuxCluster {
            wire: Some(Netns::create(&format!("{}wire", config.prefix))?),
            config,
            temp,
            etcd: None,
            hosts: BTreeMap::new(),
            externals: BTreeMap::new(),
            workloads: BTreeMap::new(),
            links: 0,
        };
        let wire = cluster.wire();
        // A fixed MAC: a bridge without one takes the lowest of its ports' MACs, so a machine
        // added later (a scenario's `external`) could change it under the hosts' ARP entries
        // for etcd, whose packets then went nowhere until ARP re-probed, seconds later.
        wire.ip(&[
            "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge",
        ])?;
        wire.ip(&["addr", "add", &format!("{WIRE_IP}/24"), "dev", "br0"])?;
        wire.ip(&["link", "set", "br0", "up"])?;
        cluster.start_etcd()?;
        Ok(cluster)
    }

    fn wire(&self) -> &Netns {
        self.wire
            .as_ref()
            .expect("the wire namespace lives until teardown")
    }

    /// `http://172.31.250.254:23790`, the `ETCD_ENDPOINTS` of every host.
    pub fn etcd_endpoint(&self) -> String {
        format!("http://{WIRE_IP}:{ETCD_CLIENT_PORT}")
    }

    /// The programs this cluster runs.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn start_etcd(&mut self) -> Result<(), LinuxError> {
        let dir = self.temp.path().join("etcd");
        let log_path = self.temp.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|reason| LinuxError::Io {
            what: format!("creating {}", log_path.display()),
            reason,
        })?;
        let log_err = log.try_clone().map_err(|reason| LinuxError::Io {
            what: format!("opening {}", log_path.display()),
            reason,
        })?;
        let client = self.etcd_endpoint();
        let peer = format!("http://{WIRE_IP}:{ETCD_PEER_PORT}");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", self.wire().name(), "etcd"])
            .args(["--name", "calirs", "--data-dir"])
            .arg(&dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("calirs={peer}")])
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|reason| LinuxError::Io {
                what: "starting etcd (is etcd-server installed?)".into(),
                reason,
            })?;
        self.etcd = Some(child);
        // A real read through calicoctl: etcd is ready once it serves one.
        let deadline = Instant::now() + ETCD_READY;
        loop {
            let out = self
                .ctl_command(
                    self.wire().name(),
                    "calirs-wire",
                    &self.temp.path().join("wire"),
                )
                .args(["pool", "show"])
                .output();
            if out.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            let exited = self
                .etcd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() >= deadline {
                return Err(LinuxError::EtcdNotReady {
                    seconds: ETCD_READY.as_secs(),
                    log: log_path.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ip netns exec <ns> calicoctl` with the host's environment, without arguments yet.
    fn ctl_command(&self, ns: &str, hostname: &str, data_dir: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&self.config.calicoctl)
            .env("HOSTNAME", hostname)
            .env("ETCD_ENDPOINTS", self.etcd_endpoint())
            .env("CALICO_DATASTORE", "etcd")
            .env("CALICO_DATA_DIR", data_dir)
            .env_remove("ETCD_AUTHORITY")
            .stdin(Stdio::null());
        cmd
    }

    /// Adds host `name` at `ip` (and `ip6`): its namespace, a veth to the bridge, the addresses.
    ///
    /// # Errors
    /// `BadHost` for a duplicate name or an address outside 172.31.250.0/24 (or, for IPv6,
    /// outside fd00::/8); tool failures.
    pub fn add_host(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
    ) -> Result<(), LinuxError> {
        let addrs: Vec<IpAddr> = std::iter::once(IpAddr::V4(ip))
            .chain(ip6.map(IpAddr::V6))
            .collect();
        let ns = self.add_machine(name, &addrs)?;
        let data_dir = self.temp.path().join(name);
        std::fs::create_dir_all(&data_dir).map_err(|reason| LinuxError::Io {
            what: format!("creating {}", data_dir.display()),
            reason,
        })?;
        self.hosts.insert(
            name.to_string(),
            Host {
                ns,
                ip,
                ip6,
                data_dir,
            },
        );
        Ok(())
    }

    /// Adds `external` machine `name` at `ip`: a namespace on the bridge holding the address,
    /// with only the link's connected route, no agent and no rules.
    ///
    /// # Errors
    /// As [`LinuxCluster::add_host`].
    pub fn add_external(&mut self, name: &str, ip: IpAddr) -> Result<(), LinuxError> {
        let ns = self.add_machine(name, &[ip])?;
        self.externals.insert(name.to_string(), External { ns, ip });
        Ok(())
    }

    /// A namespace `<prefix><name>` with `eth0` on the bridge holding `addrs` (v4 /24, v6 /64).
    fn add_machine(&mut self, name: &str, addrs: &[IpAddr]) -> Result<Netns, LinuxError> {
        let bad = |reason: String| LinuxError::BadHost {
            host: name.to_string(),
            reason,
        };
        if self.hosts.contains_key(name) || self.externals.contains_key(name) {
            return Err(bad("declared twice".into()));
        }
        for ip in addrs {
            let inside = match ip {
                IpAddr::V4(v4) => {
                    let [a, b, c, d] = v4.octets();
                    (a, b, c) == (172, 31, 250) && d != 0 && d < 254
                }
                IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
            };
            if !inside {
                return Err(bad(format!(
                    "address {ip} must be inside 172.31.250.1-253 or fd00::/8 on the linux dataplane"
                )));
            }
            if let Some(other) = self.machine_with(*ip) {
                return Err(bad(format!("address {ip} is already {other}'s")));
            }
        }
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid || name.len() > 40 {
            return Err(bad(
                "name must be [A-Za-z0-9_.-], at most 40 characters".into()
            ));
        }
        let ns = Netns::create(&format!("{}{name}", self.config.prefix))?;
        let link = format!("w{}", self.links);
        self.links += 1;
        self.wire().ip(&[
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.wire()
            .ip(&["link", "set", &link, "master", "br0", "up"])?;
        for ip in addrs {
            let addr = match ip {
                IpAddr::V4(_) => format!("{ip}/24"),
                IpAddr::V6(_) => format!("{ip}/64"),
            };
            // `nodad`: the address is usable at once, not after duplicate detection.
            ns.ip(&["addr", "add", &addr, "dev", "eth0", "nodad"])?;
        }
        ns.ip(&["link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    /// The host or external machine holding `ip` on the wire.
    fn machine_with(&self, ip: IpAddr) -> Option<&str> {
        let host = self
            .hosts
            .iter()
            .find(|(_, h)| IpAddr::V4(h.ip) == ip || h.ip6.map(IpAddr::V6) == Some(ip));
        let external = || self.externals.iter().find(|(_, e)| e.ip == ip);
        host.map(|(n, _)| n.as_str())
            .or_else(|| external().map(|(n, _)| n.as_str()))
    }

    /// Adds workload `name` on `host`: a namespace of that name with only `lo`.
    ///
    /// # Errors
    /// `BadWorkload` for an unknown host or a duplicate; `NamespaceExists` when a namespace
    /// of that name exists already (it is not ours to use).
    pub fn add_workload(&mut self, host: &str, name: &str) -> Result<(), LinuxError> {
        let bad = |reason: String| LinuxError::BadWorkload {
            workload: name.to_string(),
            reason,
        };
        if !self.hosts.contains_key(host) {
            return Err(bad(format!("no host {host} declared")));
        }
        if self.workloads.contains_key(name) || self.externals.contains_key(name) {
            return Err(bad("declared twice".into()));
        }
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(bad("name must be [A-Za-z0-9_.-]".into()));
        }
        let ns = Netns::create(name)?;
        self.workloads.insert(
            name.to_string(),
            Workload {
                host: host.to_string(),
                ns,
            },
        );
        Ok(())
    }

    /// Runs `calicoctl args...` in `host`'s namespace with its `HOSTNAME`, `ETCD_ENDPOINTS`
    /// and data dir.
    ///
    /// # Errors
    /// `BadHost` for an unknown host; `Io` when the process cannot start.
    pub async fn calicoctl(&self, host: &str, args: &[String]) -> Result<CtlOutput, LinuxError> {
        self.calicoctl_with_input(host, args, None).await
    }

    /// [`LinuxCluster::calicoctl`] with `stdin` (when given) as its standard input.
    ///
    /// # Errors
    /// As `calicoctl`; `Io` when the input cannot be written.
    pub async fn calicoctl_with_input(
        &self,
        host: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CtlOutput, LinuxError> {
        use tokio::io::AsyncWriteExt as _;
        let h = self.hosts.get(host).ok_or_else(|| LinuxError::BadHost {
            host: host.to_string(),
            reason: "not declared (only a host runs calicoctl)".into(),
        })?;
        let io = |what: String| move |reason| LinuxError::Io { what, reason };
        let mut cmd: tokio::process::Command =
            self.ctl_command(h.ns.name(), host, &h.data_dir).into();
        let mut child = cmd
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("running calicoctl on {host}")))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(io(format!("writing calicoctl's stdin on {host}")))?;
            // Dropping the pipe closes it: calicoctl reads to end of file.
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(io(format!("running calicoctl on {host}")))?;
        Ok(CtlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Every datastore key as [`super::predict::dump`] writes it, read by `calico-sim
    /// store-dump` run in the wire namespace (etcd is reachable only there).
    ///
    /// # Errors
    /// `Command` when the dump fails.
    pub async fn store_dump(&self) -> Result<String, LinuxError> {
        let exe = self.config.probe_exe.display().to_string();
        let args = ["netns", "exec", self.wire().name(), &exe, "store-dump"];
        let out = tokio::process::Command::new("ip")
            .args(args)
            .env("ETCD_ENDPOINTS", self.etcd_endpoint())
            .env_remove("ETCD_AUTHORITY")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| LinuxError::Command {
                command: netns::command_line("ip", &args),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(LinuxError::Command {
                command: netns::command_line("ip", &args),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Host names, sorted.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// The namespace of `host`.
    pub fn host_netns(&self, host: &str) -> Option<&str> {
        self.hosts.get(host).map(|h| h.ns.name())
    }

    /// The address of `host`.
    pub fn host_ip(&self, host: &str) -> Option<Ipv4Addr> {
        self.hosts.get(host).map(|h| h.ip)
    }

    /// The IPv6 address of `host`, if declared with one.
    pub fn host_ip6(&self, host: &str) -> Option<Ipv6Addr> {
        self.hosts.get(host).and_then(|h| h.ip6)
    }

    /// The namespace and the wire addresses of a host or external machine named `name`.
    pub fn machine(&self, name: &str) -> Option<(&str, Vec<IpAddr>)> {
        if let Some(h) = self.hosts.get(name) {
            let addrs = std::iter::once(IpAddr::V4(h.ip))
                .chain(h.ip6.map(IpAddr::V6))
                .collect();
            return Some((h.ns.name(), addrs));
        }
        self.externals.get(name).map(|e| (e.ns.name(), vec![e.ip]))
    }

    /// The namespace of the host or external machine holding `ip` on the wire.
    pub fn machine_netns(&self, ip: IpAddr) -> Option<&str> {
        let name = self.machine_with(ip)?;
        self.machine(name).map(|(ns, _)| ns)
    }

    /// The data dir of `host` (pid file, log, BIRD's run dir).
    pub fn data_dir(&self, host: &str) -> Option<&Path> {
        self.hosts.get(host).map(|h| h.data_dir.as_path())
    }

    /// Workloads as (name, host), sorted by name.
    pub fn workloads(&self) -> impl Iterator<Item = (&str, &str)> {
        self.workloads
            .iter()
            .map(|(name, w)| (name.as_str(), w.host.as_str()))
    }

    /// The namespace of workload `name` (its own name).
    pub fn workload_netns(&self, name: &str) -> Option<&str> {
        self.workloads.get(name).map(|w| w.ns.name())
    }

    /// The workload's global addresses as its namespace holds them (`ip -o addr`), v4 first.
    pub fn workload_addrs(&self, name: &str) -> Vec<IpAddr> {
        let Some(w) = self.workloads.get(name) else {
            return Vec::new();
        };
        let mut addrs: Vec<IpAddr> =
            w.ns.ip(&["-o", "addr", "show", "scope", "global"])
                .map(|text| parse_addrs(&text))
                .unwrap_or_default();
        addrs.sort_by_key(IpAddr::is_ipv6);
        addrs
    }

    /// The pid of `host`'s running calico-node (its pid file names a live process).
    pub fn agent_pid(&self, host: &str) -> Option<u32> {
        let dir = self.data_dir(host)?;
        let pid: u32 = std::fs::read_to_string(dir.join("calico-node.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
        (!matches!(state, 'Z' | 'X')).then_some(pid)
    }

    /// Removes everything: the processes in our namespaces (calico-node, BIRD, listeners),
    /// the namespaces, etcd. Returns every error; safe to call twice.
    pub fn teardown(&mut self) -> Vec<LinuxError> {
        let mut errors = Vec::new();
        // Processes first, so no agent reprograms a namespace being deleted.
        for w in self.workloads.values() {
            errors.extend(w.ns.kill_processes());
        }
        for h in self.hosts.values() {
            errors.extend(h.ns.kill_processes());
        }
        for e in self.externals.values() {
            errors.extend(e.ns.kill_processes());
        }
        for (_, mut w) in std::mem::take(&mut self.workloads) {
            errors.extend(w.ns.delete());
        }
        for (_, mut h) in std::mem::take(&mut self.hosts) {
            errors.extend(h.ns.delete());
        }
        for (_, mut e) in std::mem::take(&mut self.externals) {
            errors.extend(e.ns.delete());
        }
        if let Some(mut etcd) = self.etcd.take() {
            netns::signal(etcd.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(etcd.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
        if let Some(mut wire) = self.wire.take() {
            errors.extend(wire.delete());
        }
        errors
    }
}

impl Drop for LinuxCluster {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("teardown: {e}");
        }
    }
}

/// Addresses in `ip -o addr` lines (`2: eth1    inet 192.168.1.1/32 scope global eth1`,
/// `inet6 fd00::1/128 ...`).
fn parse_addrs(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line
                .split_whitespace()
                .skip_while(|w| *w != "inet" && *w != "inet6");
            words.next()?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_ip_output() {
        let text = "5: eth1    inet 192.168.1.1/32 scope global eth1\\       valid_lft forever\n\
                    5: eth1    inet 192.168.1.9/32 scope global secondary eth1\n\
                    5: eth1    inet6 fd00::1/128 scope global \\       valid_lft forever\n";
        let want: Vec<IpAddr> = ["192.168.1.1", "192.168.1.9", "fd00::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(parse_addrs(text), want);
        assert_eq!(parse_addrs("garbage\n"), Vec::<IpAddr>::new());
    }

    #[test]
    fn missing_tools_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClusterConfig::next_to(&dir.path().join("calico-sim")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("calicoctl") && text.contains("cargo build"),
            "{text}"
        );
    }
}

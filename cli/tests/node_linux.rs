//! The node's life on a real kernel: the real `calicoctl` and `calico-node` binaries, real
//! BIRD and iptables, each test in a network namespace of its own (`nlife-<pid>-<tag>`, only
//! loopback, no traffic leaves it), with a sled data dir in a temp dir. Needs root (skipped
//! with a message otherwise; a failure under `CI`).
//!
//! - `calicoctl node` returns when the agent serves: 30 concurrent commands right after it
//!   all succeed; `status` lists BIRD's sessions per family; `node stop` leaves no process
//!   running in the namespace (BIRD included).
//! - `--backend=none` starts no BIRD; `--log-dir` gets the agent's and BIRD's logs.
//! - `calicoctl diags` writes a bundle a test can open, with the host's records in it and a
//!   missing tool's error instead of its output.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use calico_backends::Store as _;

fn sh_ok(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the test can run: root and the tools; skipped with a message otherwise.
fn can_run(test: &str) -> bool {
    let mut missing = Vec::new();
    if !sh_ok("test \"$(id -u)\" = 0") {
        missing.push("root");
    }
    for tool in [
        "ip",
        "iptables-save",
        "iptables-restore",
        "ipset",
        "bird",
        "birdc",
    ] {
        if !sh_ok(&format!("command -v {tool}")) {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: needs {} (run scripts/install-deps as root)",
        missing.join(", ")
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("skipping {msg}");
    false
}

/// A network namespace of this test with its data dir; on drop, whatever still runs in it is
/// killed (by pid: the namespace is ours) and it is deleted.
struct Node {
    ns: String,
    data_dir: tempfile::TempDir,
}

impl Node {
    fn new(tag: &str) -> Node {
        let ns = format!("nlife-{}-{tag}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {ns}");
        let ok = Command::new("ip")
            .args(["-n", &ns, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(ok.success(), "ip -n {ns} link set lo up");
        Node {
            ns,
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// `calicoctl --hostname h1 <args>` inside the namespace.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        for var in ["ETCD_ENDPOINTS", "ETCD_AUTHORITY", "CALICO_DATASTORE"] {
            cmd.env_remove(var);
        }
        cmd.args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_calicoctl")])
            .args(["--hostname", "h1"])
            .args(args)
            .env("CALICO_DATA_DIR", self.dir());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "calicoctl {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn exec(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, program])
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout)
    }

    /// Live (not zombie) processes whose network namespace is this one, as `(pid, command)`.
    fn processes(&self) -> Vec<(u32, String)> {
        let ino = std::fs::metadata(format!("/run/netns/{}", self.ns))
            .unwrap()
            .ino();
        let want = format!("net:[{ino}]");
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let in_ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.to_string_lossy() == want);
            if !in_ns {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let state = rest.trim_start().chars().next();
            if matches!(state, Some('Z' | 'X')) {
                continue;
            }
            let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
            found.push((pid, comm));
        }
        found
    }

    fn running(&self, comm: &str) -> bool {
        self.processes().iter().any(|(_, c)| c == comm)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for (pid, _) in self.processes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `cond` (a hang guard of 30 s, not a timing assertion); panics with `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not reached within 30 s");
}

#[test]
fn node_serves_at_once_and_stop_leaves_nothing_running() {
    if !can_run("node_serves_at_once_and_stop_leaves_nothing_running") {
        return;
    }
    let node = Node::new("serve");
    let logs = node.dir().join("logs");
    let log_dir = format!("--log-dir={}", logs.display());
    node.ok(&["node", "--ip=172.31.250.1", "--ip6=fd10::1", &log_dir]);

    // Ready means serving: the socket answers the moment `node` returned.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = calico_backends::proxy::socket_path(node.dir());
    let ready = runtime.block_on(async {
        let remote = calico_backends::proxy::RemoteStore::connect(&socket)
            .await
            .unwrap();
        remote.get("/calico/v1/Ready").await.unwrap()
    });
    assert_eq!(ready.map(|kv| kv.value), Some(b"true".to_vec()));

    // Right after `node`: 30 commands at once, all through the agent's socket.
    let children: Vec<_> = (0..30)
        .map(|i| {
            node.command(&["profile", "add", &format!("PROF_{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let failures: Vec<String> = children
        .into_iter()
        .filter_map(|child| {
            let out = child.wait_with_output().unwrap();
            (!out.status.success()).then(|| text(&out.stderr))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let shown = node.ok(&["profile", "show"]);
    assert_eq!(
        shown.lines().filter(|l| l.starts_with("PROF_")).count(),
        30,
        "{shown}"
    );

    // One BGP peer per family: BIRD and BIRD6 each get a session, status a table each.
    node.ok(&["bgp", "peer", "add", "172.31.250.2", "as", "64511"]);
    node.ok(&["bgp", "peer", "add", "fd10::2", "as", "64511"]);
    let mut status = String::new();
    wait_for("both sessions in calicoctl status", || {
        status = node.ok(&["status"]);
        status.contains("172.31.250.2") && status.contains("fd10::2")
    });
    let (v4, v6) = status.split_once("IPv6 BGP status").expect(&status);
    assert!(
        v4.contains("IPv4 BGP status") && v4.contains("172.31.250.2"),
        "{status}"
    );
    assert!(
        v6.contains("fd10::2") && !v6.contains("172.31.250.2"),
        "{status}"
    );
    assert!(status.contains("Running calico-node version"), "{status}");

    // The node's processes run in the namespace; their logs are in --log-dir.
    assert!(node.running("calico-node"), "{:?}", node.processes());
    assert!(node.running("bird"), "{:?}", node.processes());
    for log in ["calico-node.log", "bird.log", "bird6.log"] {
        let content = std::fs::read_to_string(logs.join(log)).unwrap_or_default();
        assert!(!content.is_empty(), "{log} is empty or missing");
    }
    assert!(
        !node.dir().join("calico-node.log").exists(),
        "the agent logs to --log-dir, not the data dir"
    );

    node.ok(&["node", "stop"]);
    assert_eq!(
        node.processes(),
        Vec::new(),
        "still running after node stop"
    );
    let status = node.ok(&["status"]);
    assert!(status.starts_with("calico-node is not running"), "{status}");
}

#[test]
fn policy_only_node_runs_no_bird() {
    if !can_run("policy_only_node_runs_no_bird") {
        return;
    }
    let node = Node::new("policy");
    let out = node.ok(&["node", "--ip=172.31.250.1", "--backend=none"]);
    assert!(out.contains("policy only"), "{out}");
    node.ok(&["bgp", "peer", "add", "172.31.250.2", "as", "64511"]);
    // The agent reports its status once its first apply (BIRD's step included) is done.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    wait_for("the agent's status report", || {
        runtime.block_on(async {
            let store = calico_backends::proxy::open_local_store(node.dir())
                .await
                .unwrap();
            store
                .get("/calico/felix/v1/host/h1/status")
                .await
                .unwrap()
                .is_some()
        })
    });
    assert!(node.exec("iptables-save", &[]).contains(":cali-"));
    assert!(node.running("calico-node"), "{:?}", node.processes());
    assert!(!node.running("bird"), "{:?}", node.processes());
    assert!(!node.dir().join("bird").join("bird.cfg").exists());
    let status = node.ok(&["status"]);
    assert!(status.contains("No IPv4 peers found."), "{status}");
    node.ok(&["node", "stop"]);
    assert_eq!(node.processes(), Vec::new());
}

/// The entries of a `.tar.gz`, name → content.
fn read_bundle(path: &Path) -> Vec<(String, String)> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            e.read_to_string(&mut content).unwrap();
            (name, content)
        })
        .collect()
}

fn bundle_path(out: &str) -> PathBuf {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Diags saved to "))
        .unwrap_or_else(|| panic!("no bundle path in {out}"));
    PathBuf::from(line)
}

#[test]
fn diags_bundle_holds_logs_tools_and_the_hosts_records() {
    if !can_run("diags_bundle_holds_logs_tools_and_the_hosts_records") {
        return;
    }
    let node = Node::new("diags");
    node.ok(&["node", "--ip=172.31.250.1"]);
    node.ok(&["bgp", "peer", "add", "172.31.250.2", "as", "64511"]);
    wait_for("BIRD's session", || {
        node.ok(&["status"]).contains("172.31.250.2")
    });

    let out = node.ok(&["diags"]);
    let path = bundle_path(&out);
    assert!(path.starts_with(std::env::temp_dir()), "{}", path.display());
    let entries = read_bundle(&path);
    let get = |name: &str| {
        entries
            .iter()
            .find(|(n, _)| n == &format!("diags-h1/{name}"))
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| {
                panic!(
                    "no {name} in {:?}",
                    entries.iter().map(|e| &e.0).collect::<Vec<_>>()
                )
            })
    };
    assert!(
        get("datastore.txt").contains("/calico/v1/host/h1/bird_ip 172.31.250.1"),
        "{}",
        get("datastore.txt")
    );
    assert!(get("datastore.txt").contains("/calico/bgp/v1/global/peer_v4/172.31.250.2"));
    assert!(get("commands/iptables-save.txt").contains(":cali-"));
    assert!(get("commands/ip-link.txt").contains("lo:"));
    assert!(get("bird/bird-protocols.txt").contains("Global_172_31_250_2"));
    assert!(get("status.txt").contains("IPv4 BGP status"));
    assert!(get("versions.txt").contains("calico-node "));
    assert!(get("versions.txt").contains("BIRD"));
    assert!(get("logs/calico-node.log").contains("calico-node starting"));
    assert!(!get("logs/bird.log").is_empty());
    for name in [
        "commands/ip6tables-save.txt",
        "commands/ipset-list.txt",
        "commands/ip-route.txt",
        "commands/ip-6-route.txt",
    ] {
        get(name);
    }
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();

    // With iptables-save missing from PATH the bundle still comes, naming the failure.
    let tools = tempfile::tempdir().unwrap();
    for tool in ["ip", "birdc", "bird"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        std::os::unix::fs::symlink(text(&found.stdout).trim(), tools.path().join(tool)).unwrap();
    }
    let out = node
        .command(&["diags"])
        .env("PATH", tools.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let path = bundle_path(&text(&out.stdout));
    let entries = read_bundle(&path);
    let iptables = &entries
        .iter()
        .find(|(n, _)| n.ends_with("commands/iptables-save.txt"))
        .unwrap()
        .1;
    assert!(
        iptables.contains("error: running iptables-save"),
        "{iptables}"
    );
    assert!(entries
        .iter()
        .any(|(n, c)| n.ends_with("commands/ip-route.txt") && !c.contains("error")));
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    node.ok(&["node", "stop"]);
    assert_eq!(node.processes(), Vec::new());
}

#[test]
fn a_foreground_node_stopped_with_ctrl_c_leaves_nothing_running() {
    if !can_run("a_foreground_node_stopped_with_ctrl_c_leaves_nothing_running") {
        return;
    }
    let node = Node::new("fg");
    // Its own process group, as a terminal would give it; the agent joins it.
    let mut child = node
        .command(&["node", "--ip=172.31.250.1", "--detach=false"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for("calico-node and BIRD running", || {
        node.running("calico-node") && node.running("bird")
    });
    // Ctrl-C: SIGINT to the whole foreground group.
    let ok = Command::new("kill")
        .args(["-s", "INT", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(node.processes(), Vec::new(), "still running after Ctrl-C");
}

//! Agent restarts on real hosts, repeated: calico-node is SIGKILLed [`KILLS`] times at
//! pseudo-random moments (alternating hosts) while one ping runs between two allowed
//! workloads and another between two denied ones. No allowed reply is lost, no denied
//! packet is answered, and each host's calico chains after every restart are exactly those
//! before the first kill. RELIABILITY.md reports what this test prints.

mod linux_common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_sim::linux::LinuxRunner;
use linux_common::exec;

/// SIGKILLs of calico-node.
const KILLS: usize = 20;
/// Ping interval, and the most pings one run may take (the ping stops itself at this count).
const PING_INTERVAL: &str = "0.2";

/// A and B share a profile; C's profile lets it send anything, but B admits only its tag.
const SETUP: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
workload host1 workload_A
workload host2 workload_B
workload host1 workload_C
host1$ calicoctl container add workload_A 192.168.1.1
host2$ calicoctl container add workload_B 192.168.1.2
host1$ calicoctl container add workload_C 192.168.1.3
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl profile add PROF_C
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
host1$ calicoctl container workload_C profile set PROF_C
expect workload_A -> workload_B icmp allow
expect workload_C -> workload_B icmp deny
";

/// Our chains and rules in `iptables-save` (every line naming `cali`), counters stripped.
fn our_rules(ns: &str) -> String {
    let (ok, text) = exec(ns, "iptables-save", &[]);
    assert!(ok, "iptables-save in {ns}");
    text.lines()
        .filter(|l| l.contains("cali"))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A ping from `ns` to `dst` that runs until SIGINT (`ip netns exec` execs ping, so the
/// child's PID is ping's).
fn start_ping(ns: &str, dst: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-i", PING_INTERVAL, dst])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops a ping with SIGINT and returns (transmitted, received, its summary, its output).
fn stop_ping(ping: Child) -> (u64, u64, String, String) {
    let status = Command::new("kill")
        .args(["-INT", &ping.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "SIGINT to ping {}", ping.id());
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary from ping:\n{text}"))
        .to_owned();
    let number = |word: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| w.starts_with(word)).unwrap();
        words[at - 1].parse().unwrap()
    };
    (number("packets"), number("received"), line, text)
}

/// The icmp_seq numbers ping printed replies for.
fn replied_seqs(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A small xorshift: the kill moments vary, yet every run of the test is the same.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test]
async fn twenty_sigkills_lose_no_allowed_reply_and_let_nothing_denied_through() {
    let Some(config) = linux_common::setup("twenty_sigkills_lose_no_allowed_reply") else {
        return;
    };
    let mut runner = LinuxRunner::new(config).unwrap();
    linux_common::run_text(&mut runner, SETUP).await;
    let cluster = runner.cluster();
    let hosts = ["host2", "host1"];
    let baseline: Vec<String> = hosts
        .iter()
        .map(|h| our_rules(cluster.host_netns(h).unwrap()))
        .collect();
    for (h, rules) in hosts.iter().zip(&baseline) {
        assert!(
            rules.contains("-A cali-"),
            "no calico rules on {h}:\n{rules}"
        );
    }
    let a = cluster.workload_netns("workload_A").unwrap().to_string();
    let c = cluster.workload_netns("workload_C").unwrap().to_string();
    let allowed = start_ping(&a, "192.168.1.2");
    let denied = start_ping(&c, "192.168.1.2");

    let started = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for kill in 0..KILLS {
        let host = hosts[kill % 2];
        let ns = cluster.host_netns(host).unwrap().to_string();
        // A random moment: 0-700 ms after the last restart settled.
        tokio::time::sleep(Duration::from_millis(next(&mut seed) % 700)).await;
        let old = cluster.agent_pid(host).expect("the agent runs");
        let (ok, _) = exec(&ns, "kill", &["-KILL", &old.to_string()]);
        assert!(ok, "SIGKILL to calico-node {old} on {host}");
        while cluster.agent_pid(host) == Some(old) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ip = if host == "host1" {
            "172.31.250.1"
        } else {
            "172.31.250.2"
        };
        let out = cluster
            .calicoctl(host, &["node".into(), format!("--ip={ip}")])
            .await
            .unwrap();
        assert!(
            out.success,
            "restarting calico-node on {host}: {}",
            out.stderr
        );
        let new = cluster.agent_pid(host).expect("the new agent runs");
        assert_ne!(new, old);
        calico_sim::linux::settle::settle(cluster).await.unwrap();
        let rules = our_rules(&ns);
        assert_eq!(
            rules,
            baseline[kill % 2],
            "{host}'s chains changed across restart {}",
            kill + 1
        );
    }
    let took = started.elapsed();
    let denied = stop_ping(denied);
    let (sent, _, summary, text) = stop_ping(allowed);
    assert!(sent > 20, "too few pings to mean anything: {summary}");
    // SIGINT can land between the last echo and its reply: every earlier one is answered.
    let replied = replied_seqs(&text);
    let lost: Vec<u64> = (1..sent).filter(|seq| !replied.contains(seq)).collect();
    assert!(
        lost.is_empty(),
        "allowed replies lost across {KILLS} restarts (icmp_seq {lost:?}): {summary}"
    );
    assert_eq!(denied.1, 0, "a denied ping was answered: {}", denied.2);
    println!(
        "agent restarts: {KILLS} SIGKILLs over {took:?}; allowed ping {summary}; denied ping {}",
        denied.2
    );
}

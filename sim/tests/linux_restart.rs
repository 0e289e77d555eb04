//! Restart on real hosts: calico-node is SIGKILLed and restarted (`calicoctl node`) while a
//! ping runs between two allowed workloads; no reply is lost, and the agent's iptables
//! chains after the restart are exactly those before it.

mod linux_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use calico_sim::linux::LinuxRunner;
use linux_common::exec;

const SETUP: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
workload host1 workload_A
workload host2 workload_B
host1$ calicoctl container add workload_A 192.168.1.1
host2$ calicoctl container add workload_B 192.168.1.2
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
expect workload_A -> workload_B icmp allow
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

#[tokio::test]
async fn sigkilled_agent_restarts_without_dropping_traffic() {
    let Some(config) = linux_common::setup("sigkilled_agent_restarts_without_dropping_traffic")
    else {
        return;
    };
    let mut runner = LinuxRunner::new(config).unwrap();
    linux_common::run_text(&mut runner, SETUP).await;
    let cluster = runner.cluster();
    let h2 = cluster.host_netns("host2").unwrap().to_string();
    let before = our_rules(&h2);
    assert!(
        before.contains("-A cali-"),
        "no calico rules on host2:\n{before}"
    );
    let old_pid = cluster.agent_pid("host2").expect("host2's agent runs");

    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            "workload_A",
            "ping",
            "-i",
            "0.2",
            "-c",
            "25",
            "192.168.1.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (ok, _) = exec(&h2, "kill", &["-KILL", &old_pid.to_string()]);
    assert!(ok, "SIGKILL to calico-node {old_pid}");
    while cluster.agent_pid("host2") == Some(old_pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = cluster
        .calicoctl("host2", &["node".into(), "--ip=172.31.250.2".into()])
        .await
        .unwrap();
    assert!(out.success, "restarting calico-node: {}", out.stderr);
    let new_pid = cluster.agent_pid("host2").expect("the new agent runs");
    assert_ne!(new_pid, old_pid);

    let ping = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("25 packets transmitted, 25 received"),
        "replies lost across the restart:\n{text}"
    );
    calico_sim::linux::settle::settle(cluster).await.unwrap();
    assert_eq!(
        our_rules(&h2),
        before,
        "host2's chains changed across the restart"
    );
    assert_eq!(cluster.agent_pid("host2"), Some(new_pid));
}

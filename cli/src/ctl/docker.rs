//! `<CONTAINER>` as a Docker container name or id, when a Docker engine is present: the
//! seed's `docker run --net=none --name=workload_A` workloads. Asks `docker inspect` for the
//! container's PID and full id; the network namespace is then `/proc/<pid>/ns/net`.

use std::path::Path;

use tokio::process::Command;

use super::Workload;

/// The engine's API socket; without it there is no Docker to ask.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Resolves a running container that does not share the host's network (orchestrator
/// `docker`, workload id = the full 64-hex container id, as the original wrote it). `None`
/// when there is no engine, no such container, or it is stopped or uses `--net=host`.
pub async fn resolve(container: &str) -> Option<Workload> {
    if !Path::new(DOCKER_SOCKET).exists() || container.starts_with('-') {
        return None;
    }
    let output = Command::new("docker")
        .args(["inspect", "--type", "container", "--format"])
        .arg("{{.State.Running}} {{.State.Pid}} {{.Id}} {{.HostConfig.NetworkMode}}")
        .arg(container)
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_inspect(&String::from_utf8_lossy(&output.stdout))
}

fn parse_inspect(line: &str) -> Option<Workload> {
    let mut fields = line.split_whitespace();
    let (running, pid, id, mode) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let pid: u32 = pid.parse().ok()?;
    let valid_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if running != "true" || pid == 0 || mode == "host" || !valid_id {
        return None;
    }
    Some(Workload {
        netns: format!("/proc/{pid}/ns/net"),
        orchestrator: "docker".into(),
        workload_id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_running_container_without_network_resolves_to_its_pid_namespace() {
        let w = parse_inspect(&format!("true 4242 {ID} none\n")).unwrap();
        assert_eq!(w.netns, "/proc/4242/ns/net");
        assert_eq!(w.orchestrator, "docker");
        assert_eq!(w.workload_id, ID);
    }

    #[test]
    fn stopped_host_network_and_garbled_containers_do_not_resolve() {
        assert_eq!(parse_inspect(&format!("false 0 {ID} none")), None);
        assert_eq!(parse_inspect(&format!("true 4242 {ID} host")), None);
        assert_eq!(parse_inspect("true 4242 not-an-id none"), None);
        assert_eq!(parse_inspect("true"), None);
    }
}

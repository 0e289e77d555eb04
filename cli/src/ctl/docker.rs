//! `<CONTAINER>` as a Docker container name or id: the seed's
//! `docker run --net=none --name=workload_A` workloads. Asks `docker inspect` for the
//! container's PID and full id; the network namespace is then `/proc/<pid>/ns/net`.
//!
//! The engine is the one the `docker` CLI itself would use: `DOCKER_HOST` when set (as the
//! original's docker-py client honoured it), else `unix:///var/run/docker.sock`. It is passed
//! to `docker` as `--host`, so the engine checked is the engine asked.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::Workload;

/// The engine when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long `docker inspect` may take; an engine that hangs must not hang calicoctl.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which Docker engine to ask: `DOCKER_HOST` when set and non-empty, else the default socket.
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// What to tell a user whose engine socket is missing.
fn no_engine_hint(host: &str) -> &'static str {
    if host == DEFAULT_HOST {
        "set DOCKER_HOST if the engine listens elsewhere"
    } else {
        "is DOCKER_HOST right?"
    }
}

/// Why a `<CONTAINER>` is not a usable Docker workload; each names the engine asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerMiss {
    #[error("no Docker engine at {host}: socket {socket} does not exist ({hint})")]
    NoEngine {
        host: String,
        socket: String,
        hint: &'static str,
    },
    #[error("running docker --host {host} inspect: {reason}")]
    Inspect { host: String, reason: String },
    #[error("the Docker engine at {host} has no container {container}")]
    NoSuchContainer { host: String, container: String },
    #[error("Docker container {container} (engine {host}) is not running")]
    NotRunning { host: String, container: String },
    #[error("Docker container {container} (engine {host}) uses the host's network (--net=host); run it with --net=none")]
    HostNetwork { host: String, container: String },
    #[error("docker --host {host} inspect {container} printed {output:?}, not \"<running> <pid> <64-hex id> <network mode>\"")]
    Garbled {
        host: String,
        container: String,
        output: String,
    },
}

/// Resolves a running container that does not share the host's network (orchestrator
/// `docker`, workload id = the full 64-hex container id, as the original wrote it), on the
/// engine of [`engine_host`].
///
/// # Errors
/// A [`DockerMiss`] saying which engine was asked and what it answered.
pub async fn resolve(container: &str) -> Result<Workload, DockerMiss> {
    resolve_on(&engine_host(), container).await
}

/// As [`resolve`], on engine `host` (`unix://<path>`, `tcp://...`, ...).
///
/// # Errors
/// As [`resolve`].
pub async fn resolve_on(host: &str, container: &str) -> Result<Workload, DockerMiss> {
    let no_such = || DockerMiss::NoSuchContainer {
        host: host.to_string(),
        container: container.to_string(),
    };
    // An argument docker would read as an option is no container name.
    if container.is_empty() || container.starts_with('-') {
        return Err(no_such());
    }
    if let Some(socket) = host.strip_prefix("unix://") {
        if !Path::new(socket).exists() {
            return Err(DockerMiss::NoEngine {
                host: host.to_string(),
                socket: socket.to_string(),
                hint: no_engine_hint(host),
            });
        }
    }
    let inspect = Command::new("docker")
        .args(["--host", host, "inspect", "--type", "container", "--format"])
        .arg("{{.State.Running}} {{.State.Pid}} {{.Id}} {{.HostConfig.NetworkMode}}")
        .arg(container)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let failed = |reason: String| DockerMiss::Inspect {
        host: host.to_string(),
        reason,
    };
    let output = tokio::time::timeout(INSPECT_TIMEOUT, inspect)
        .await
        .map_err(|_| failed(format!("no answer within {} s", INSPECT_TIMEOUT.as_secs())))?
        .map_err(|e| failed(format!("cannot run docker: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No such container") || stderr.contains("No such object") {
            return Err(no_such());
        }
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(failed(format!("{}: {}", output.status, first.trim())));
    }
    parse_inspect(host, container, &String::from_utf8_lossy(&output.stdout))
}

fn parse_inspect(host: &str, container: &str, line: &str) -> Result<Workload, DockerMiss> {
    let garbled = || DockerMiss::Garbled {
        host: host.to_string(),
        container: container.to_string(),
        output: line.trim().to_string(),
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [running, pid, id, mode] = fields[..] else {
        return Err(garbled());
    };
    let pid: u32 = pid.parse().map_err(|_| garbled())?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(garbled());
    }
    if running != "true" || pid == 0 {
        return Err(DockerMiss::NotRunning {
            host: host.to_string(),
            container: container.to_string(),
        });
    }
    if mode == "host" {
        return Err(DockerMiss::HostNetwork {
            host: host.to_string(),
            container: container.to_string(),
        });
    }
    Ok(Workload {
        netns: format!("/proc/{pid}/ns/net"),
        orchestrator: "docker".into(),
        workload_id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const HOST: &str = "unix:///tmp/x/docker.sock";

    fn parse(line: &str) -> Result<Workload, DockerMiss> {
        parse_inspect(HOST, "workload_A", line)
    }

    #[test]
    fn a_running_container_without_network_resolves_to_its_pid_namespace() {
        let w = parse(&format!("true 4242 {ID} none\n")).unwrap();
        assert_eq!(w.netns, "/proc/4242/ns/net");
        assert_eq!(w.orchestrator, "docker");
        assert_eq!(w.workload_id, ID);
    }

    #[test]
    fn stopped_host_network_and_garbled_containers_do_not_resolve() {
        let not_running = parse(&format!("false 0 {ID} none")).unwrap_err();
        assert!(matches!(not_running, DockerMiss::NotRunning { .. }));
        let host_net = parse(&format!("true 4242 {ID} host")).unwrap_err();
        assert!(host_net.to_string().contains("--net=host"), "{host_net}");
        for garbled in ["true 4242 not-an-id none", "true", "true x {ID} none"] {
            let e = parse(garbled).unwrap_err();
            assert!(matches!(e, DockerMiss::Garbled { .. }), "{garbled}: {e}");
        }
    }

    #[tokio::test]
    async fn a_missing_socket_is_named_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let e = resolve_on(&host, "workload_A").await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&socket.display().to_string()) && text.contains("DOCKER_HOST"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[tokio::test]
    async fn option_like_names_never_reach_docker() {
        let e = resolve_on(HOST, "--help").await.unwrap_err();
        assert!(matches!(e, DockerMiss::NoSuchContainer { .. }), "{e}");
    }
}

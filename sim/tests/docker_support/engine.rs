//! [`DockerEngine`]: a Docker engine of the test's own, the seed's `docker run` without a
//! registry and without touching the machine's network or any other engine.
//!
//! `dockerd --iptables=false --ip6tables=false --bridge=none --ip-forward=false` with its data
//! root, exec root, pid file and API socket in a temp dir (so `DOCKER_HOST` must name it), the
//! `vfs` storage driver (works on any filesystem, no overlay mounts) and containers' cgroups
//! under `calirs-<pid>-docker`. dockerd starts its own containerd with config, state and socket
//! under the exec root. dockerd runs in a mount namespace of its own (`unshare --mount`), so its
//! bind mounts never appear in the machine's mount table, even if the test dies.
//!
//! Teardown removes the containers, stops dockerd (and with it containerd), then kills any
//! process that still names the temp dir or sits in the containers' cgroup — only ever ours —
//! and removes the cgroup dirs, the temp dir and `/run/containerd` if this engine created it
//! (containerd's shims put their sockets there whatever the config says).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image `docker import` builds: busybox-static and links for the seed's tools.
pub const IMAGE: &str = "calirs-busybox";
/// The busybox applets the image links, besides `busybox` itself.
const APPLETS: [&str; 4] = ["sh", "ping", "ip", "sleep"];
/// How long dockerd may take to answer its first API call.
const READY: Duration = Duration::from_secs(30);
/// How long dockerd may take to stop after SIGTERM (it stops containerd first).
const STOP: Duration = Duration::from_secs(20);
/// How long one docker CLI call may take (`timeout` kills it after that).
const DOCKER_CALL: Duration = Duration::from_secs(60);
/// How long stray processes get between SIGTERM and SIGKILL, and after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// A dockerd started by this test; torn down on drop.
#[derive(Debug)]
pub struct DockerEngine {
    temp: Option<tempfile::TempDir>,
    temp_path: PathBuf,
    dockerd: Option<Child>,
    host: String,
    cgroup_parent: String,
    made_run_containerd: bool,
    containers: Vec<String>,
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl DockerEngine {
    /// Starts dockerd and waits until it answers.
    ///
    /// # Errors
    /// Why the engine cannot run here (a missing tool, not root, dockerd exiting or not
    /// answering, with its log's tail): the caller's reason to skip.
    pub fn start() -> Result<DockerEngine, String> {
        let missing: Vec<&str> = [
            "dockerd",
            "docker",
            "containerd",
            "runc",
            "unshare",
            "nsenter",
        ]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "needs {} (scripts/install-deps installs docker.io)",
                missing.join(", ")
            ));
        }
        if !Path::new("/bin/busybox").is_file() {
            return Err("needs /bin/busybox (scripts/install-deps installs busybox-static)".into());
        }
        let temp = tempfile::Builder::new()
            .prefix("calirs-docker-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir: {e}"))?;
        let temp_path = temp.path().to_path_buf();
        let log_path = temp_path.join("dockerd.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let host = format!("unix://{}", temp_path.join("docker.sock").display());
        let cgroup_parent = format!("calirs-{}-docker", std::process::id());
        let made_run_containerd = !Path::new("/run/containerd").exists();
        let dir = |name: &str| temp_path.join(name).display().to_string();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "dockerd"])
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args([
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
            ])
            .args(["--data-root", &dir("data"), "--exec-root", &dir("exec")])
            .args(["--pidfile", &dir("docker.pid"), "-H", &host])
            .args(["--cgroup-parent", &format!("/{cgroup_parent}")])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        let mut engine = DockerEngine {
            temp: Some(temp),
            temp_path,
            dockerd: Some(child),
            host,
            cgroup_parent,
            made_run_containerd,
            containers: Vec::new(),
        };
        engine.wait_ready()?;
        Ok(engine)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY;
        loop {
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .is_ok()
            {
                return Ok(());
            }
            let exited = self
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!("dockerd exited ({status}): {}", self.log_tail(5)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "dockerd did not answer on {} within {} s: {}",
                    self.host,
                    READY.as_secs(),
                    self.log_tail(5)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `unix://<temp>/docker.sock`: the `DOCKER_HOST` of everything talking to this engine.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Where the docker CLI keeps its config for this engine (not the user's `~/.docker`).
    pub fn cli_config(&self) -> PathBuf {
        self.temp_path.join("cli")
    }

    /// The last `lines` lines of dockerd's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.temp_path.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn docker_output(&self, args: &[&str]) -> Result<Output, String> {
        // Bounded: a wedged engine fails the test with a message instead of hanging it.
        Command::new("timeout")
            .args([
                "--kill-after=5",
                &DOCKER_CALL.as_secs().to_string(),
                "docker",
            ])
            .arg("--host")
            .arg(&self.host)
            .args(args)
            .env("DOCKER_CONFIG", self.cli_config())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running docker {}: {e}", args.join(" ")))
    }

    /// `docker --host <ours> args...`, its stdout.
    ///
    /// # Errors
    /// The command line and docker's stderr when it fails.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = self.docker_output(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else if out.status.code() == Some(124) {
            Err(format!(
                "docker {} did not finish within {} s",
                args.join(" "),
                DOCKER_CALL.as_secs()
            ))
        } else {
            Err(format!(
                "docker {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Builds [`IMAGE`] without a registry: `docker import` of a tarball holding
    /// `/bin/busybox` (from busybox-static) and links for `sh`, `ping`, `ip` and `sleep`, with
    /// `sh` as its command (so `docker run -tid` keeps it alive, as the seed's ubuntu).
    ///
    /// # Errors
    /// The step that failed.
    pub fn import_busybox(&self) -> Result<(), String> {
        let root = self.temp_path.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .map_err(|e| format!("copying /bin/busybox: {e}"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))
                .map_err(|e| format!("linking bin/{applet}: {e}"))?;
        }
        let tarball = self.temp_path.join("busybox.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()
            .map_err(|e| format!("running tar: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tar of {} failed: {}",
                root.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let tarball = tarball.display().to_string();
        self.docker(&["import", "--change", r#"CMD ["sh"]"#, &tarball, IMAGE])?;
        Ok(())
    }

    /// The seed's `docker run --net=none --name=<name> -tid <image>`, with [`IMAGE`] for
    /// ubuntu. Returns the full container id.
    ///
    /// # Errors
    /// docker's error.
    pub fn run_workload(&mut self, name: &str) -> Result<String, String> {
        let name_arg = format!("--name={name}");
        let id = self.docker(&["run", "--net=none", &name_arg, "-tid", IMAGE])?;
        self.containers.push(name.to_string());
        Ok(id.trim().to_string())
    }

    /// The full id of container `name`.
    ///
    /// # Errors
    /// docker's error.
    pub fn id(&self, name: &str) -> Result<String, String> {
        Ok(self
            .docker(&[
                "inspect",
                "--type",
                "container",
                "--format",
                "{{.Id}}",
                name,
            ])?
            .trim()
            .to_string())
    }

    /// The network namespace of running container `name`, `/proc/<pid>/ns/net`.
    ///
    /// # Errors
    /// docker's error, or a container that is not running.
    pub fn netns(&self, name: &str) -> Result<String, String> {
        let pid = self.docker(&["inspect", "--format", "{{.State.Pid}}", name])?;
        match pid.trim().parse::<u32>() {
            Ok(pid) if pid > 0 => Ok(format!("/proc/{pid}/ns/net")),
            _ => Err(format!("container {name} is not running (pid {pid:?})")),
        }
    }

    /// `docker exec <name> args...` (success, stdout and stderr).
    ///
    /// # Errors
    /// When docker cannot be run at all.
    pub fn exec(&self, name: &str, args: &[&str]) -> Result<(bool, String), String> {
        let mut full = vec!["exec", name];
        full.extend_from_slice(args);
        let out = self.docker_output(&full)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// Pids of processes that are this engine's: their command line names the temp dir
    /// (dockerd, containerd, shims) or they sit in the containers' cgroup.
    pub fn own_processes(&self) -> Vec<u32> {
        let temp = self.temp_path.display().to_string();
        let cgroup = format!("/{}/", self.cgroup_parent);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != std::process::id())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                let cgroups =
                    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
                    .unwrap_or(true);
                !zombie && (cmdline.contains(&temp) || cgroups.contains(&cgroup))
            })
            .collect()
    }

    fn stop_dockerd(&mut self, errors: &mut Vec<String>) {
        let Some(mut child) = self.dockerd.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            for name in std::mem::take(&mut self.containers) {
                if let Err(e) = self.docker(&["rm", "--force", &name]) {
                    errors.push(format!("removing container {name}: {e}"));
                }
            }
            signal(child.id(), "TERM");
            let deadline = Instant::now() + STOP;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                errors.push(format!(
                    "dockerd {} did not stop within {} s of SIGTERM; killed",
                    child.id(),
                    STOP.as_secs()
                ));
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    fn kill_strays(&self, errors: &mut Vec<String>) {
        let strays = self.own_processes();
        if strays.is_empty() {
            return;
        }
        errors.push(format!(
            "processes {strays:?} of the engine outlived dockerd; killing them"
        ));
        for sig in ["TERM", "KILL"] {
            for pid in self.own_processes() {
                signal(pid, sig);
            }
            let deadline = Instant::now() + KILL_GRACE;
            while !self.own_processes().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let left = self.own_processes();
        if !left.is_empty() {
            errors.push(format!("processes {left:?} still running after SIGKILL"));
        }
    }

    fn remove_dirs(&mut self, errors: &mut Vec<String>) {
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for controller in controllers.flatten() {
                let dir = controller.path().join(&self.cgroup_parent);
                match std::fs::remove_dir(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        errors.push(format!("removing cgroup {}: {e}", dir.display()));
                    }
                    _ => {}
                }
            }
        }
        if self.made_run_containerd {
            // Only if empty: another engine may have started using it since.
            let _ = std::fs::remove_dir("/run/containerd/s");
            let _ = std::fs::remove_dir("/run/containerd");
        }
        if let Some(temp) = self.temp.take() {
            if let Err(e) = temp.close() {
                errors.push(format!("removing {}: {e}", self.temp_path.display()));
            }
        }
    }

    /// Removes the containers, stops dockerd and containerd, kills any process of the engine
    /// left, removes its cgroups and dirs. Returns every problem; safe to call twice.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.temp.is_none() {
            return errors;
        }
        self.stop_dockerd(&mut errors);
        self.kill_strays(&mut errors);
        self.remove_dirs(&mut errors);
        errors
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("docker teardown: {e}");
        }
    }
}

/// `kill -<sig> <pid>`; a process already gone is no error.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

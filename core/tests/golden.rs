//! Golden tests of the policy compiler: each `golden/<case>.txt` holds a `#` line saying what
//! the case shows, a `host <name>` line (add `v6` to also show the IPv6 filter table), an
//! `== input` section of raw `key value` lines as they sit in etcd, then the expected rendered
//! output. Run with `UPDATE_GOLDEN=1` to rewrite the expected sections (then review them by eye).

use std::fmt::Write as _;
use std::path::Path;

use calico_core::calc::Calculator;
use calico_core::cluster::ClusterState;
use calico_core::compute::{compute, filter_table, NAT_V4};
use calico_core::iptables::IpFamily;
use calico_core::render::bird::render_bird;
use calico_core::render::ipset::render_ipsets;
use calico_core::render::iptables::render_table;

struct Case {
    header: String,
    host: String,
    show_v6: bool,
    input: Vec<(String, String)>,
}

fn parse(text: &str) -> Case {
    let mut header = String::new();
    let mut host = String::from("calico-01");
    let mut show_v6 = false;
    let mut input = Vec::new();
    let mut in_input = false;
    for line in text.lines() {
        if line.starts_with("== ") {
            if in_input {
                break;
            }
            in_input = line == "== input";
            header.push_str(line);
            header.push('\n');
            continue;
        }
        if in_input {
            if line.trim().is_empty() {
                continue;
            }
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            input.push((k.to_string(), v.to_string()));
        } else {
            if let Some(rest) = line.strip_prefix("host ") {
                let mut words = rest.split_whitespace();
                host = words.next().unwrap_or("calico-01").to_string();
                show_v6 = words.any(|w| w == "v6");
            }
            header.push_str(line);
            header.push('\n');
        }
    }
    Case {
        header,
        host,
        show_v6,
        input,
    }
}

fn render_case(case: &Case) -> String {
    let mut state = ClusterState::default();
    for (k, v) in &case.input {
        state.apply(k, Some(v.as_bytes()));
    }
    let desired = compute(&state, &case.host);

    // The incremental calculator must agree with the full compute on every golden case.
    let mut calc = Calculator::new(&case.host);
    calc.apply_batch(
        case.input
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.as_bytes().to_vec()))),
    );
    assert_eq!(
        calc.desired(),
        &desired,
        "calculator disagrees with compute"
    );

    let mut out = String::new();
    for (k, v) in &case.input {
        let _ = writeln!(out, "{k} {v}");
    }
    let mut section = |name: &str, body: String| {
        let _ = write!(out, "\n== {name}\n{body}");
    };
    let table = |id| {
        desired
            .tables
            .get(&id)
            .map(|t| render_table(id, t))
            .unwrap_or_default()
    };
    section("filter v4", table(filter_table(IpFamily::V4)));
    if case.show_v6 {
        section("filter v6", table(filter_table(IpFamily::V6)));
    }
    section("nat v4", table(NAT_V4));
    section("ipsets", render_ipsets(&desired.ipsets));
    let mut routes = String::new();
    for r in &desired.routes {
        let _ = writeln!(routes, "{} dev {}", r.dst, r.dev);
    }
    for n in &desired.neighbours {
        let _ = writeln!(routes, "neigh {} lladdr {} dev {}", n.ip, n.mac, n.dev);
    }
    for n in &desired.proxy_neighbours {
        let _ = writeln!(routes, "neigh proxy {} dev {}", n.ip, n.dev);
    }
    section("routes", routes);
    let mut sysctls = String::new();
    for (k, v) in &desired.sysctls {
        let _ = writeln!(sysctls, "{k}={v}");
    }
    section("sysctls", sysctls);
    if !desired.overlay.is_empty() {
        let o = &desired.overlay;
        let mut text = String::new();
        for d in o.devices.values() {
            let _ = writeln!(text, "device {d}");
        }
        for e in &o.fdb {
            let _ = writeln!(text, "fdb {e}");
        }
        for n in &o.neighbours {
            let _ = writeln!(text, "neigh {} lladdr {} dev {}", n.ip, n.mac, n.dev);
        }
        for r in &o.routes {
            let _ = writeln!(text, "{r}");
        }
        section("overlay", text);
    }
    if let Some(cfg) = &desired.bird_v4 {
        section("bird v4", render_bird(cfg, false));
    }
    if let Some(cfg) = &desired.bird_v6 {
        section("bird v6", render_bird(cfg, true));
    }
    out
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    entries.sort();
    assert!(entries.len() >= 10, "expected the golden cases in {dir:?}");
    let mut failures = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let case = parse(&text);
        let expected = format!("{}{}", case.header, render_case(&case));
        if update {
            std::fs::write(&path, &expected).unwrap();
        } else if text != expected {
            failures.push(format!(
                "{}:\n{}",
                path.display(),
                first_difference(&text, &expected)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

fn first_difference(have: &str, want: &str) -> String {
    for (i, (a, b)) in have.lines().zip(want.lines()).enumerate() {
        if a != b {
            return format!("line {}:\n  file: {a}\n  now:  {b}", i + 1);
        }
    }
    format!(
        "lengths differ: file has {} lines, now {}",
        have.lines().count(),
        want.lines().count()
    )
}

#[test]
fn bird_accepts_rendered_configs_when_installed() {
    let bird = ["/usr/sbin/bird", "/usr/bin/bird"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(bird) = bird else {
        eprintln!("skipping: bird (bird2) is not installed");
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let tmp = std::env::temp_dir().join(format!("calico-core-bird-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // A v4 + v6 case with global peers, and the block aggregation case (static routes and
    // the block checks in the export filter).
    for case_name in ["mesh_off_global_peer", "block_aggregation"] {
        let text = std::fs::read_to_string(dir.join(format!("{case_name}.txt"))).unwrap();
        let case = parse(&text);
        let mut state = ClusterState::default();
        for (k, v) in &case.input {
            state.apply(k, Some(v.as_bytes()));
        }
        let desired = compute(&state, &case.host);
        let configs = [
            ("v4.conf", desired.bird_v4.as_ref(), false),
            ("v6.conf", desired.bird_v6.as_ref(), true),
        ];
        assert!(
            desired.bird_v4.is_some(),
            "{case_name} has a v4 BGP address"
        );
        for (name, cfg, v6) in configs {
            let Some(cfg) = cfg else { continue };
            let file = tmp.join(format!("{case_name}-{name}"));
            std::fs::write(&file, render_bird(cfg, v6)).unwrap();
            let out = std::process::Command::new(bird)
                .arg("-p")
                .arg("-c")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "bird rejected {case_name} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

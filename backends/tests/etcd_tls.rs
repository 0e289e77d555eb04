//! `EtcdStore` over TLS against a real etcd the test starts with `--client-cert-auth` (see
//! `support/etcd_server.rs`), with a throwaway CA, server and client certificates made by the
//! `openssl` CLI in a temp dir: reads, writes and watches work with the right certificates;
//! a missing client certificate or a CA that did not sign the server's is `Unavailable`
//! naming the endpoint. Skips when etcd or openssl is not installed (fails under `CI`).

#[path = "support/etcd_server.rs"]
mod etcd_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use calico_backends::{EtcdConfig, EtcdStore, Store, StoreError, TlsFiles, WatchEvent};
use etcd_server::{EtcdServer, ServerTls};
use futures::StreamExt;

/// A hang guard for waits on etcd (not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// The certificates of one test: a CA, a server and a client certificate it signed, and an
/// unrelated CA.
#[derive(Debug)]
struct Pki {
    _dir: tempfile::TempDir,
    ca: Pem,
    server: Pem,
    client: Pem,
    other_ca: Pem,
}

impl Pki {
    /// Generates the certificates, or `None` (after a message) when `openssl` is missing and
    /// `CI` is unset.
    fn generate() -> Option<Pki> {
        if Command::new("openssl").arg("version").output().is_err() {
            if std::env::var_os("CI").is_some() {
                panic!("openssl not found; CI must run the etcd tls tests (apt install openssl)");
            }
            eprintln!("skipping: install openssl (no openssl binary to make test certificates)");
            return None;
        }
        let dir = tempfile::tempdir().expect("creating a temp dir for certificates");
        let ca = make_ca(dir.path(), "ca");
        let server = issue(
            dir.path(),
            &ca,
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        let client = issue(dir.path(), &ca, "client", "extendedKeyUsage=clientAuth\n");
        let other_ca = make_ca(dir.path(), "other-ca");
        Some(Pki {
            _dir: dir,
            ca,
            server,
            client,
            other_ca,
        })
    }

    fn server_tls(&self) -> ServerTls {
        ServerTls {
            cert: self.server.cert.clone(),
            key: self.server.key.clone(),
            trusted_ca: self.ca.cert.clone(),
            client_cert: self.client.cert.clone(),
            client_key: self.client.key.clone(),
        }
    }
}

/// Runs `openssl` in `dir`, failing the test with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed CA certificate (`openssl req -x509` marks it `CA:TRUE`).
fn make_ca(dir: &Path, name: &str) -> Pem {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN=calico-test-{name}");
    let mut args = vec!["req", "-x509"];
    args.extend(NEW_EC_KEY);
    args.extend([
        "-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subject,
    ]);
    openssl(dir, &args);
    Pem {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// A leaf certificate signed by `ca`, with the given X.509v3 extensions.
fn issue(dir: &Path, ca: &Pem, name: &str, extensions: &str) -> Pem {
    let (cert, key, csr, ext) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!("basicConstraints=CA:FALSE\n{extensions}"),
    )
    .unwrap();
    let subject = format!("/CN=calico-test-{name}");
    let mut args = vec!["req", "-new"];
    args.extend(NEW_EC_KEY);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
    openssl(dir, &args);
    let (ca_cert, ca_key) = (ca.cert.to_str().unwrap(), ca.key.to_str().unwrap());
    let serial = format!("{}", name.len() + 2);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca_cert,
            "-CAkey",
            ca_key,
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    Pem {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

fn config(endpoint: &str, ca: &Pem, client: Option<&Pem>) -> EtcdConfig {
    EtcdConfig {
        tls: Some(TlsFiles {
            ca_cert: ca.cert.clone(),
            cert: client.map(|c| c.cert.clone()),
            key: client.map(|c| c.key.clone()),
        }),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..EtcdConfig::new(vec![endpoint.to_string()])
    }
}

/// Connecting with `config` must fail promptly with `Unavailable` naming `endpoint`.
async fn assert_refused(config: EtcdConfig, endpoint: &str, case: &str) {
    let result = tokio::time::timeout(PATIENCE, EtcdStore::connect(config))
        .await
        .unwrap_or_else(|_| panic!("{case}: connect hung"));
    match result {
        Err(StoreError::Unavailable {
            endpoint: named,
            reason,
        }) => {
            assert_eq!(named, endpoint, "{case}");
            assert!(!reason.is_empty(), "{case}");
            eprintln!("{case}: {reason}");
        }
        other => panic!("{case}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn store_over_tls_reads_writes_and_watches() {
    let Some(pki) = Pki::generate() else {
        return;
    };
    let Some(server) = EtcdServer::start_tls(pki.server_tls()).await else {
        return;
    };
    let endpoint = server.endpoint();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let store = EtcdStore::connect(config(&endpoint, &pki.ca, Some(&pki.client)))
        .await
        .unwrap();

    let (_, listed_at) = store.list("/tls/").await.unwrap();
    let mut watch = store.watch("/tls/", listed_at + 1).await.unwrap();
    let written = store.put("/tls/a", b"1".to_vec()).await.unwrap();
    let kv = store
        .get("/tls/a")
        .await
        .unwrap()
        .expect("the key just put");
    assert_eq!((kv.value, kv.mod_revision), (b"1".to_vec(), written));
    let mut events = Vec::new();
    while events.len() < 2 {
        match tokio::time::timeout(PATIENCE, watch.next()).await {
            Ok(Some(event)) => events.push(event.unwrap()),
            Ok(None) => panic!("watch ended early"),
            Err(_) => panic!("watch stalled for {PATIENCE:?}"),
        }
    }
    assert_eq!(
        events[0],
        WatchEvent::InSync {
            revision: listed_at
        }
    );
    match &events[1] {
        WatchEvent::Put(kv) => {
            assert_eq!(
                (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision),
                ("/tls/a", &b"1"[..], written)
            );
        }
        other => panic!("expected the put, got {other:?}"),
    }

    // The operator's way in: the environment variables of the original calicoctl.
    let authority = endpoint.trim_start_matches("https://").to_string();
    let vars = [
        ("ETCD_AUTHORITY", authority),
        ("ETCD_SCHEME", "https".to_string()),
        ("ETCD_CA_CERT_FILE", pki.ca.cert.display().to_string()),
        ("ETCD_CERT_FILE", pki.client.cert.display().to_string()),
        ("ETCD_KEY_FILE", pki.client.key.display().to_string()),
    ];
    let from_env = EtcdConfig::from_vars(|name| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.clone())
    })
    .unwrap();
    assert_eq!(from_env.endpoints, vec![endpoint.clone()]);
    let store = EtcdStore::connect(from_env).await.unwrap();
    let kv = store
        .get("/tls/a")
        .await
        .unwrap()
        .expect("the key put above");
    assert_eq!(kv.value, b"1".to_vec());
}

#[tokio::test]
async fn missing_client_cert_or_wrong_ca_is_unavailable_and_named() {
    let Some(pki) = Pki::generate() else {
        return;
    };
    let Some(server) = EtcdServer::start_tls(pki.server_tls()).await else {
        return;
    };
    let endpoint = server.endpoint();
    // etcd runs with --client-cert-auth: no client certificate, no service.
    assert_refused(
        config(&endpoint, &pki.ca, None),
        &endpoint,
        "without a client certificate",
    )
    .await;
    // The server's certificate does not chain to the CA we trust.
    assert_refused(
        config(&endpoint, &pki.other_ca, Some(&pki.client)),
        &endpoint,
        "with the wrong ca",
    )
    .await;
    // A client certificate the server's CA did not sign.
    assert_refused(
        config(&endpoint, &pki.ca, Some(&pki.other_ca)),
        &endpoint,
        "with a client certificate from another ca",
    )
    .await;
    // Plain http to the TLS port is refused as well, not mistaken for success.
    let http = endpoint.replace("https://", "http://");
    let plain = EtcdConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..EtcdConfig::new(vec![http.clone()])
    };
    assert_refused(plain, &http, "over plain http").await;
    // The right certificates still work against the same server.
    EtcdStore::connect(config(&endpoint, &pki.ca, Some(&pki.client)))
        .await
        .unwrap();
}

//! Where and how to reach etcd: endpoints, TLS files and timeouts, read from the environment
//! the way the original calicoctl and Felix read them.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The endpoint used when the environment names none (etcd's own default client URL).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// How long connecting to an endpoint may take before the store reports it unavailable
/// (a refused connection fails at once).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one request may take before the store reports etcd unavailable.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificate files for etcd over TLS (`ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`,
/// `ETCD_KEY_FILE`). The CA verifies the server and is required, as in the original client;
/// cert and key together authenticate us to an etcd that runs with `--client-cert-auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Settings for [`EtcdStore::connect`](super::EtcdStore::connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://10.0.0.1:2379`; requests are balanced over them. With
    /// [`tls`](Self::tls) they must all be `https://`.
    pub endpoints: Vec<String>,
    /// TLS files; required exactly when the endpoints are `https://`.
    pub tls: Option<TlsFiles>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Why the etcd settings are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EtcdConfigError {
    #[error("etcd endpoint {endpoint:?} is not an http:// or https:// url")]
    BadEndpoint { endpoint: String },
    #[error("ETCD_SCHEME {scheme:?} is neither http nor https")]
    BadScheme { scheme: String },
    #[error("ETCD_ENDPOINTS is set but names no endpoint")]
    NoEndpoints,
    #[error("reading {path} ({var}): {reason}")]
    UnreadableFile {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("ETCD_CERT_FILE and ETCD_KEY_FILE must be set together")]
    HalfClientCert,
    #[error("etcd endpoint {endpoint} is https but no ca certificate (ETCD_CA_CERT_FILE) is set to verify it")]
    MissingCaCert { endpoint: String },
    #[error("etcd tls certificate files are set but endpoint {endpoint} is plain http; use https:// (ETCD_SCHEME=https)")]
    TlsNeedsHttps { endpoint: String },
    #[error("etcd endpoints mix http ({http}) and https ({https}); use one scheme")]
    MixedSchemes { http: String, https: String },
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig::new(vec![DEFAULT_ENDPOINT.to_string()])
    }
}

impl EtcdConfig {
    /// Plain-HTTP endpoints with the default timeouts.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Reads `ETCD_ENDPOINTS` (comma-separated URLs), else `ETCD_AUTHORITY` (host:port) with
    /// `ETCD_SCHEME` (http|https), else [`DEFAULT_ENDPOINT`]; and the TLS files
    /// `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`.
    ///
    /// # Errors
    /// A malformed endpoint or scheme; an unreadable or non-PEM TLS file (naming it); a cert
    /// without its key; https without a CA file; TLS files with an http endpoint (talking
    /// plain HTTP to a cluster the operator configured for TLS would be wrong); or http and
    /// https endpoints mixed.
    pub fn from_env() -> Result<Self, EtcdConfigError> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`from_env`](Self::from_env) over any variable lookup (tests pass a map).
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, EtcdConfigError> {
        let endpoints = match (var("ETCD_ENDPOINTS"), var("ETCD_AUTHORITY")) {
            (Some(list), _) => {
                let endpoints: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect();
                if endpoints.is_empty() {
                    return Err(EtcdConfigError::NoEndpoints);
                }
                endpoints
            }
            (None, Some(authority)) => {
                let scheme = var("ETCD_SCHEME").unwrap_or_else(|| "http".to_string());
                let scheme = scheme.trim().to_ascii_lowercase();
                if scheme != "http" && scheme != "https" {
                    return Err(EtcdConfigError::BadScheme { scheme });
                }
                vec![format!("{scheme}://{}", authority.trim())]
            }
            (None, None) => vec![DEFAULT_ENDPOINT.to_string()],
        };
        for endpoint in &endpoints {
            validate_endpoint(endpoint)?;
        }
        let path = |name: &str| var(name).map(|p| PathBuf::from(p.trim()));
        let (ca_cert, cert, key) = (
            path("ETCD_CA_CERT_FILE"),
            path("ETCD_CERT_FILE"),
            path("ETCD_KEY_FILE"),
        );
        if cert.is_some() != key.is_some() {
            return Err(EtcdConfigError::HalfClientCert);
        }
        // A client certificate without a CA over http would otherwise pass as plain http.
        let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
        if (ca_cert.is_some() || cert.is_some()) && !any_https {
            return Err(EtcdConfigError::TlsNeedsHttps {
                endpoint: endpoints[0].clone(),
            });
        }
        let config = EtcdConfig {
            tls: ca_cert.map(|ca_cert| TlsFiles { ca_cert, cert, key }),
            ..EtcdConfig::new(endpoints)
        };
        // Fail now, naming the file, rather than at the first connect.
        config.tls_options()?;
        Ok(config)
    }

    /// The endpoints as one string, for error messages.
    pub fn endpoints_label(&self) -> String {
        self.endpoints.join(",")
    }

    /// etcd-client's TLS settings from the certificate files, read now: `None` for plain
    /// http.
    ///
    /// # Errors
    /// `MixedSchemes`, `MissingCaCert` (https without TLS files), `TlsNeedsHttps` (TLS files
    /// with http endpoints), `HalfClientCert`, or `UnreadableFile` naming a file that cannot
    /// be read or holds no PEM block.
    pub(super) fn tls_options(&self) -> Result<Option<etcd_client::TlsOptions>, EtcdConfigError> {
        let http = self.endpoints.iter().find(|e| !e.starts_with("https://"));
        let https = self.endpoints.iter().find(|e| e.starts_with("https://"));
        let tls = match (&self.tls, http, https) {
            (_, Some(http), Some(https)) => {
                return Err(EtcdConfigError::MixedSchemes {
                    http: http.clone(),
                    https: https.clone(),
                })
            }
            (None, _, None) => return Ok(None),
            (None, _, Some(https)) => {
                return Err(EtcdConfigError::MissingCaCert {
                    endpoint: https.clone(),
                })
            }
            (Some(_), Some(http), None) => {
                return Err(EtcdConfigError::TlsNeedsHttps {
                    endpoint: http.clone(),
                })
            }
            (Some(tls), None, _) => tls,
        };
        let ca = read_pem("ETCD_CA_CERT_FILE", &tls.ca_cert)?;
        let mut options =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let cert = read_pem("ETCD_CERT_FILE", cert)?;
                let key = read_pem("ETCD_KEY_FILE", key)?;
                options = options.identity(etcd_client::Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => return Err(EtcdConfigError::HalfClientCert),
        }
        Ok(Some(options))
    }
}

fn validate_endpoint(endpoint: &str) -> Result<(), EtcdConfigError> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .filter(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    match rest {
        Some(_) => Ok(()),
        None => Err(EtcdConfigError::BadEndpoint {
            endpoint: endpoint.to_string(),
        }),
    }
}

/// The contents of a PEM file; the certificates themselves are parsed when connecting.
fn read_pem(var: &'static str, path: &Path) -> Result<Vec<u8>, EtcdConfigError> {
    let unreadable = |reason: String| EtcdConfigError::UnreadableFile {
        var,
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(unreadable(
            "no pem block (-----BEGIN ...) in it".to_string(),
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<EtcdConfig, EtcdConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EtcdConfig::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_to_local_etcd() {
        assert_eq!(
            from(&[]).unwrap().endpoints,
            vec![DEFAULT_ENDPOINT.to_string()]
        );
    }

    #[test]
    fn endpoints_win_over_authority() {
        let config = from(&[
            ("ETCD_ENDPOINTS", "http://a:2379, http://b:2379"),
            ("ETCD_AUTHORITY", "c:4001"),
        ])
        .unwrap();
        assert_eq!(config.endpoints, vec!["http://a:2379", "http://b:2379"]);
        assert_eq!(config.endpoints_label(), "http://a:2379,http://b:2379");
    }

    #[test]
    fn authority_takes_the_scheme() {
        let config = from(&[("ETCD_AUTHORITY", "10.0.0.1:4001")]).unwrap();
        assert_eq!(config.endpoints, vec!["http://10.0.0.1:4001"]);
        assert_eq!(
            from(&[("ETCD_AUTHORITY", "h:1"), ("ETCD_SCHEME", "ftp")]),
            Err(EtcdConfigError::BadScheme {
                scheme: "ftp".into()
            })
        );
    }

    #[test]
    fn rejects_malformed_endpoints() {
        assert_eq!(
            from(&[("ETCD_ENDPOINTS", "10.0.0.1:2379")]),
            Err(EtcdConfigError::BadEndpoint {
                endpoint: "10.0.0.1:2379".into()
            })
        );
        assert_eq!(
            from(&[("ETCD_ENDPOINTS", " , ")]),
            Err(EtcdConfigError::NoEndpoints)
        );
    }

    const FAKE_PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    /// A temp dir with `ca.pem`, `cert.pem` and `key.pem` holding PEM-shaped text.
    fn pem_files() -> (tempfile::TempDir, String, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, FAKE_PEM).unwrap();
            path.to_str().unwrap().to_string()
        };
        let (ca, cert, key) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
        (dir, ca, cert, key)
    }

    #[test]
    fn https_with_ca_and_client_cert_builds_tls_options() {
        let (_dir, ca, cert, key) = pem_files();
        let config = from(&[
            ("ETCD_AUTHORITY", "10.0.0.1:2379"),
            ("ETCD_SCHEME", "https"),
            ("ETCD_CA_CERT_FILE", &ca),
            ("ETCD_CERT_FILE", &cert),
            ("ETCD_KEY_FILE", &key),
        ])
        .unwrap();
        assert_eq!(config.endpoints, vec!["https://10.0.0.1:2379"]);
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                ca_cert: ca.into(),
                cert: Some(cert.into()),
                key: Some(key.into()),
            })
        );
        assert!(config.tls_options().unwrap().is_some());
        // The CA alone (server verification, no client certificate) is enough too.
        let (_dir, ca, _, _) = pem_files();
        let config = from(&[
            ("ETCD_ENDPOINTS", "https://a:2379,https://b:2379"),
            ("ETCD_CA_CERT_FILE", &ca),
        ])
        .unwrap();
        assert!(config.tls_options().unwrap().is_some());
        assert_eq!(EtcdConfig::default().tls_options().unwrap().map(drop), None);
    }

    #[test]
    fn https_requires_the_ca_file() {
        let (_dir, _, cert, key) = pem_files();
        assert_eq!(
            from(&[("ETCD_AUTHORITY", "h:2379"), ("ETCD_SCHEME", "https")]),
            Err(EtcdConfigError::MissingCaCert {
                endpoint: "https://h:2379".into()
            })
        );
        assert_eq!(
            from(&[
                ("ETCD_ENDPOINTS", "https://h:2379"),
                ("ETCD_CERT_FILE", &cert),
                ("ETCD_KEY_FILE", &key),
            ]),
            Err(EtcdConfigError::MissingCaCert {
                endpoint: "https://h:2379".into()
            })
        );
        // A config built in code is held to the same rule when connecting.
        let config = EtcdConfig::new(vec!["https://h:2379".into()]);
        assert_eq!(
            config.tls_options().map(|o| o.map(drop)),
            Err(EtcdConfigError::MissingCaCert {
                endpoint: "https://h:2379".into()
            })
        );
    }

    #[test]
    fn tls_files_are_not_silently_ignored_over_http() {
        let (_dir, ca, cert, key) = pem_files();
        assert_eq!(
            from(&[("ETCD_AUTHORITY", "h:2379"), ("ETCD_CA_CERT_FILE", &ca)]),
            Err(EtcdConfigError::TlsNeedsHttps {
                endpoint: "http://h:2379".into()
            })
        );
        assert_eq!(
            from(&[("ETCD_CERT_FILE", &cert), ("ETCD_KEY_FILE", &key)]),
            Err(EtcdConfigError::TlsNeedsHttps {
                endpoint: DEFAULT_ENDPOINT.into()
            })
        );
        assert_eq!(
            from(&[
                ("ETCD_ENDPOINTS", "https://a:2379,http://b:2379"),
                ("ETCD_CA_CERT_FILE", &ca),
            ]),
            Err(EtcdConfigError::MixedSchemes {
                http: "http://b:2379".into(),
                https: "https://a:2379".into(),
            })
        );
        assert_eq!(
            from(&[("ETCD_CERT_FILE", &cert)]),
            Err(EtcdConfigError::HalfClientCert)
        );
    }

    #[test]
    fn unreadable_or_non_pem_files_are_named() {
        let (dir, ca, cert, _) = pem_files();
        let missing = dir.path().join("missing.pem");
        let err = from(&[
            ("ETCD_ENDPOINTS", "https://h:2379"),
            ("ETCD_CA_CERT_FILE", &ca),
            ("ETCD_CERT_FILE", &cert),
            ("ETCD_KEY_FILE", missing.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, EtcdConfigError::UnreadableFile { var: "ETCD_KEY_FILE", path, .. } if *path == missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let not_pem = dir.path().join("ca.der");
        std::fs::write(&not_pem, [0x30, 0x82, 0x01]).unwrap();
        let err = from(&[
            ("ETCD_ENDPOINTS", "https://h:2379"),
            ("ETCD_CA_CERT_FILE", not_pem.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, EtcdConfigError::UnreadableFile { var: "ETCD_CA_CERT_FILE", path, .. } if *path == not_pem),
            "{err:?}"
        );
        assert!(err.to_string().contains("ca.der"), "{err}");
    }
}

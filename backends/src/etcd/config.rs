//! Where and how to reach etcd: endpoints, TLS files and timeouts, read from the environment
//! the way the original calicoctl and Felix read them.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The endpoint used when the environment names none (etcd's own default client URL).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// How long connecting to an endpoint may take before the store reports it unavailable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one request may take before the store reports etcd unavailable.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Client certificate files for etcd over TLS (`ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`,
/// `ETCD_KEY_FILE`). The CA alone verifies the server; cert and key together authenticate us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Settings for [`EtcdStore::connect`](super::EtcdStore::connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://10.0.0.1:2379`; requests are balanced over them.
    pub endpoints: Vec<String>,
    /// TLS files, when any is configured.
    pub tls: Option<TlsFiles>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Why the etcd settings in the environment are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EtcdConfigError {
    #[error("etcd endpoint {endpoint:?} is not an http:// or https:// url")]
    BadEndpoint { endpoint: String },
    #[error("ETCD_SCHEME {scheme:?} is neither http nor https")]
    BadScheme { scheme: String },
    #[error("ETCD_ENDPOINTS is set but names no endpoint")]
    NoEndpoints,
    #[error("{var} names {path}, which cannot be read: {reason}")]
    UnreadableFile {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("ETCD_CERT_FILE and ETCD_KEY_FILE must be set together")]
    HalfClientCert,
    #[error("etcd tls is configured ({what}) but this build has no tls support compiled in")]
    TlsNotCompiledIn { what: String },
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
    /// A malformed endpoint or scheme, an unreadable TLS file, a cert without its key, or any
    /// TLS setting at all: this build has no TLS support (`TlsNotCompiledIn`), and silently
    /// talking plain HTTP to a cluster the operator configured for TLS would be wrong.
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
        let tls = TlsFiles {
            ca_cert: readable_file(&var, "ETCD_CA_CERT_FILE")?,
            cert: readable_file(&var, "ETCD_CERT_FILE")?,
            key: readable_file(&var, "ETCD_KEY_FILE")?,
        };
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(EtcdConfigError::HalfClientCert);
        }
        let config = EtcdConfig {
            tls: (tls.ca_cert.is_some() || tls.cert.is_some()).then_some(tls),
            ..EtcdConfig::new(endpoints)
        };
        config.check_tls_support()?;
        Ok(config)
    }

    /// The endpoints as one string, for error messages.
    pub fn endpoints_label(&self) -> String {
        self.endpoints.join(",")
    }

    /// This build talks plain HTTP only (etcd-client's `tls` feature would pull in rustls and
    /// ring); refuse TLS settings and https URLs rather than ignore them.
    ///
    /// # Errors
    /// `TlsNotCompiledIn` naming what asked for TLS.
    pub fn check_tls_support(&self) -> Result<(), EtcdConfigError> {
        if let Some(tls) = &self.tls {
            let files: Vec<String> = [&tls.ca_cert, &tls.cert, &tls.key]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            return Err(EtcdConfigError::TlsNotCompiledIn {
                what: format!("certificate files {}", files.join(", ")),
            });
        }
        if let Some(https) = self.endpoints.iter().find(|e| e.starts_with("https://")) {
            return Err(EtcdConfigError::TlsNotCompiledIn {
                what: format!("endpoint {https}"),
            });
        }
        Ok(())
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

fn readable_file(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<PathBuf>, EtcdConfigError> {
    let Some(path) = var(name) else {
        return Ok(None);
    };
    let path = PathBuf::from(path.trim());
    check_readable(&path).map_err(|reason| EtcdConfigError::UnreadableFile {
        var: name,
        path: path.clone(),
        reason,
    })?;
    Ok(Some(path))
}

fn check_readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| e.to_string())
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

    #[test]
    fn tls_settings_are_validated_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let missing = dir.path().join("missing.pem");
        let err = from(&[("ETCD_CA_CERT_FILE", missing.to_str().unwrap())]).unwrap_err();
        assert!(matches!(
            err,
            EtcdConfigError::UnreadableFile {
                var: "ETCD_CA_CERT_FILE",
                ..
            }
        ));
        assert_eq!(
            from(&[("ETCD_CERT_FILE", ca.to_str().unwrap())]),
            Err(EtcdConfigError::HalfClientCert)
        );
        let err = from(&[("ETCD_CA_CERT_FILE", ca.to_str().unwrap())]).unwrap_err();
        assert!(
            matches!(err, EtcdConfigError::TlsNotCompiledIn { .. }),
            "{err}"
        );
        let err = from(&[("ETCD_AUTHORITY", "h:2379"), ("ETCD_SCHEME", "https")]).unwrap_err();
        assert_eq!(
            err,
            EtcdConfigError::TlsNotCompiledIn {
                what: "endpoint https://h:2379".into()
            }
        );
    }
}

//! The KDS server certificate: the operator's files, or one generated into
//! the work dir on first start and reused after.

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use std::path::{Path, PathBuf};

/// Why the server certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate the KDS server certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "KDS TLS needs both a certificate and a key file (KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE, _KEY_FILE)"
    )]
    HalfConfigured,
}

/// PEM certificate chain and key.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    /// Where the certificate is, for zones to use as their root CA.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair")
            .field("cert_path", &self.cert_path)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads `cert`/`key` when given, else the pair in `work_dir` (generating
/// it on first use, self-signed for `localhost`, `127.0.0.1` and the hostname).
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    work_dir: &Path,
) -> Result<CertPair, TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(CertPair {
            cert_pem: read(c)?,
            key_pem: read(k)?,
            cert_path: c.to_path_buf(),
        }),
        (None, None) => {
            let c = work_dir.join("kds-server.crt");
            let k = work_dir.join("kds-server.key");
            if c.exists() && k.exists() {
                return Ok(CertPair {
                    cert_pem: read(&c)?,
                    key_pem: read(&k)?,
                    cert_path: c,
                });
            }
            let key_pair = KeyPair::generate()?;
            let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
            params
                .distinguished_name
                .push(DnType::CommonName, "kuma-global-kds");
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            if let Ok(h) = std::fs::read_to_string("/etc/hostname")
                && let Ok(name) = h.trim().to_string().try_into()
            {
                params.subject_alt_names.push(SanType::DnsName(name));
            }
            let cert_pem = params.self_signed(&key_pair)?.pem();
            let key_pem = key_pair.serialize_pem();
            let write = |p: &Path, s: &str| {
                std::fs::write(p, s).map_err(|source| TlsError::Write {
                    path: p.to_path_buf(),
                    source,
                })
            };
            write(&k, &key_pem)?;
            write(&c, &cert_pem)?;
            Ok(CertPair {
                cert_pem,
                key_pem,
                cert_path: c,
            })
        }
        _ => Err(TlsError::HalfConfigured),
    }
}

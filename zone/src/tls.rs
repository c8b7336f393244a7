//! The dp-server's certificate: given files, or a self-signed one generated
//! once into the work dir (kuma-dp trusts it with `--ca-cert-file`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("generating a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
    #[error("only one of the certificate and key files is set")]
    HalfConfigured,
}

/// File names of the generated certificate inside the work dir.
pub const GENERATED_CERT: &str = "dp-server.crt";
pub const GENERATED_KEY: &str = "dp-server.key";

/// Returns the certificate and key files to use, generating them if needed.
pub fn ensure_cert(
    cert: Option<&Path>,
    key: Option<&Path>,
    work_dir: &Path,
) -> Result<(PathBuf, PathBuf), TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => return Ok((c.to_path_buf(), k.to_path_buf())),
        (None, None) => {}
        _ => return Err(TlsError::HalfConfigured),
    }
    let cert_path = work_dir.join(GENERATED_CERT);
    let key_path = work_dir.join(GENERATED_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(work_dir).map_err(|source| TlsError::Write {
        path: work_dir.into(),
        source,
    })?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).map_err(TlsError::Generate)?;
    std::fs::write(&cert_path, cert.pem()).map_err(|source| TlsError::Write {
        path: cert_path.clone(),
        source,
    })?;
    std::fs::write(&key_path, signing_key.serialize_pem()).map_err(|source| TlsError::Write {
        path: key_path.clone(),
        source,
    })?;
    Ok((cert_path, key_path))
}

/// A rustls server config serving h2 (gRPC) and http/1.1 (bootstrap).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.into(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: cert.into(),
            what: "certificate",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert.into(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: key.into(),
        what: "private key",
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

//! What `kumactl generate` can do without a control plane: signing keys, their
//! public halves, self-signed TLS certificates, and tokens signed offline with
//! `--signing-key-path` + `--kid`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine;
use kuma_auth::{KeySerial, KeySet, SigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

/// `--format` of `generate signing-key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SigningKeyFormat {
    /// PEM (`RSA PRIVATE KEY`).
    Pem,
    /// The PEM, base64-encoded: ready for a secret's `data` field.
    #[value(name = "pem-base64")]
    PemBase64,
}

/// A new signing key in the requested format (no trailing newline, as Kuma prints it).
pub fn signing_key(format: SigningKeyFormat) -> anyhow::Result<String> {
    let key = SigningKey::generate().context("could not generate signing key")?;
    Ok(match format {
        SigningKeyFormat::Pem => key.to_pem(),
        SigningKeyFormat::PemBase64 => {
            base64::engine::general_purpose::STANDARD.encode(key.to_pem())
        }
    })
}

/// The public key (PEM `RSA PUBLIC KEY`) of a PEM signing key.
pub fn public_key(signing_key_pem: &str) -> anyhow::Result<String> {
    let key = SigningKey::from_pem(signing_key_pem)
        .context("provided file is not a PEM-encoded signing key")?;
    Ok(key.public_key().to_pem())
}

/// A key set holding only the offline signing key, under the `--kid` serial.
pub fn offline_key_set(signing_key_pem: &str, kid: &str) -> anyhow::Result<KeySet> {
    let serial: KeySerial = kid.parse().context("--kid must be a number")?;
    let key = SigningKey::from_secret_data(signing_key_pem.as_bytes())
        .context("could not read the signing key")?;
    let mut set = KeySet::new();
    set.insert_signing_key(serial, key);
    Ok(set)
}

/// `--type` of `generate tls-certificate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CertType {
    Server,
    Client,
}

/// `--key-type` of `generate tls-certificate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    /// RSA 2048 (Kuma's default).
    #[default]
    Rsa,
    /// ECDSA P-256.
    Ecdsa,
}

/// A certificate and its private key, both PEM.
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Validity of generated certificates: 10 years, starting 5 minutes ago, as Kuma.
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A self-signed certificate as Kuma's `NewSelfSignedCert` makes it: empty
/// subject, CA basic constraint, key usages digitalSignature + keyEncipherment +
/// keyCertSign, extended key usage serverAuth or clientAuth, each hostname a DNS
/// or IP SAN, random 128-bit serial.
pub fn self_signed_cert(
    cert_type: CertType,
    key_type: KeyType,
    hostnames: &[String],
) -> anyhow::Result<CertPair> {
    if hostnames.is_empty() {
        bail!("at least one hostname must be given");
    }
    let (key_pair, key_pem) = match key_type {
        KeyType::Ecdsa => {
            let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .context("failed to generate TLS key")?;
            let pem = kp.serialize_pem();
            (kp, pem)
        }
        KeyType::Rsa => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::EncodePrivateKey;
            // ring cannot generate RSA keys; the rsa crate does, and ring signs with it.
            let rsa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .context("failed to generate TLS key")?;
            let pkcs8 = rsa_key.to_pkcs8_der().context("failed to encode TLS key")?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
            let kp = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
                .context("failed to load TLS key")?;
            let pem = rsa_key
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .context("failed to encode TLS key")?
                .to_string();
            (kp, pem)
        }
    };
    let mut params =
        CertificateParams::new(hostnames.to_vec()).context("failed to generate TLS certificate")?;
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![match cert_type {
        CertType::Server => ExtendedKeyUsagePurpose::ServerAuth,
        CertType::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let not_before = time::OffsetDateTime::now_utc() - CLOCK_SKEW;
    params.not_before = not_before;
    params.not_after = not_before + VALIDITY;
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f; // keep it positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params
        .self_signed(&key_pair)
        .context("failed to generate TLS certificate")?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use kuma_auth::{Revocations, UserIdentity};
    use x509_parser::prelude::*;

    use super::*;

    fn parse_cert(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    #[test]
    fn signing_key_prints_pem_or_base64_of_the_pem() {
        let pem = signing_key(SigningKeyFormat::Pem).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(SigningKey::from_pem(&pem).is_ok());
        let b64 = signing_key(SigningKeyFormat::PemBase64).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .unwrap();
        let key = SigningKey::from_pem(std::str::from_utf8(&decoded).unwrap()).unwrap();
        assert_eq!(key.bits(), 2048);
        assert!(
            public_key(&pem)
                .unwrap()
                .starts_with("-----BEGIN RSA PUBLIC KEY-----")
        );
        assert!(public_key("nope").is_err());
    }

    #[test]
    fn offline_token_verifies_with_the_control_planes_copy_of_the_key() {
        let pem = signing_key(SigningKeyFormat::Pem).unwrap();
        let offline = offline_key_set(&pem, "2").unwrap();
        let token = kuma_auth::issue_user_token(
            &offline,
            &UserIdentity::new("john", ["users"]),
            Duration::from_secs(3600),
            Utc::now(),
        )
        .unwrap();
        let mut cp = KeySet::new();
        cp.insert_public_key(
            KeySerial(2),
            SigningKey::from_pem(&pem).unwrap().public_key().clone(),
        );
        let claims =
            kuma_auth::verify_user_token(&cp, &Revocations::none(), token.as_str(), Utc::now())
                .unwrap();
        assert_eq!(claims.identity.name, "john");
        assert!(offline_key_set(&pem, "x").is_err());
    }

    #[test]
    fn server_certificate_matches_kumas_shape() {
        let pair = self_signed_cert(
            CertType::Server,
            KeyType::Ecdsa,
            &["localhost".into(), "127.0.0.1".into()],
        )
        .unwrap();
        let der = parse_cert(&pair.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(cert.subject().iter().next().is_none(), "empty subject");
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert!(
            san.general_names
                .contains(&GeneralName::DNSName("localhost"))
        );
        assert!(
            san.general_names
                .contains(&GeneralName::IPAddress(&[127, 0, 0, 1]))
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && ku.key_cert_sign());
        assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
        let years = (cert.validity().not_after.timestamp()
            - cert.validity().not_before.timestamp())
            / (365 * 24 * 3600);
        assert_eq!(years, 10);
        assert!(pair.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn rsa_client_certificate_is_usable_by_rustls() {
        let pair =
            self_signed_cert(CertType::Client, KeyType::Rsa, &["dataplane-1".into()]).unwrap();
        assert!(pair.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let der = parse_cert(&pair.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );

        // The key must match the certificate: a TLS stack accepts the pair.
        use rustls::pki_types::pem::PemObject;
        let certs = vec![rustls::pki_types::CertificateDer::from(der.clone())];
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key);
        assert!(config.is_ok(), "{:?}", config.err());
    }

    #[test]
    fn refuses_no_hostnames() {
        let err = self_signed_cert(CertType::Server, KeyType::Ecdsa, &[])
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "at least one hostname must be given");
    }
}

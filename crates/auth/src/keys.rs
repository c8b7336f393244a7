//! RSA signing keys, their public halves, and the rotating set a token kind uses.
//!
//! Kuma keeps each private key as a secret whose data is a PEM `RSA PRIVATE KEY`
//! (PKCS#1); older installs stored bare PKCS#1 DER, which is still read. Public
//! keys configured for offline validation may be PKCS#1 (`RSA PUBLIC KEY`) or SPKI
//! (`PUBLIC KEY`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey,
};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::secrets::KeyOwner;

/// Key size Kuma generates (`util_rsa.DefaultKeySize`).
pub const DEFAULT_KEY_BITS: usize = 2048;

/// Why a key could not be made, read or written. Never retryable: the bytes are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The RSA key generator failed (in practice only for absurd sizes).
    #[error("failed to generate RSA key: {0}")]
    Generate(String),
    /// The bytes are neither a PEM RSA private key (PKCS#1 or PKCS#8) nor PKCS#1 DER.
    #[error("invalid RSA private key: {0}")]
    InvalidPrivateKey(String),
    /// The bytes are not a PEM RSA public key (PKCS#1 `RSA PUBLIC KEY` or SPKI `PUBLIC KEY`).
    #[error("invalid RSA public key: {0}")]
    InvalidPublicKey(String),
    /// A signing-key secret (named in the variant) held an unreadable key.
    #[error("signing key secret {secret:?} holds an invalid key: {source}")]
    InvalidSecret {
        /// The secret's name.
        secret: String,
        /// What was wrong with its data.
        #[source]
        source: Box<KeyError>,
    },
    /// The key id (`kid`) is not a serial number.
    #[error("invalid key id {0:?}: must be a non-negative integer")]
    InvalidSerial(String),
}

/// A signing key's serial number, carried as the JWT `kid` header. The highest
/// serial signs new tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeySerial(pub u64);

impl KeySerial {
    /// Serial of the key Kuma creates at first start (`DefaultKeyID`).
    pub const DEFAULT: KeySerial = KeySerial(1);
    /// Serial of a legacy key whose secret name has no suffix (Kuma 1.3).
    pub const LEGACY: KeySerial = KeySerial(0);

    /// The serial after this one, for rotation.
    #[must_use]
    pub fn next(self) -> KeySerial {
        KeySerial(self.0.saturating_add(1))
    }
}

impl fmt::Display for KeySerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for KeySerial {
    type Err = KeyError;

    /// Accepts decimal digits only; leading zeros are allowed (`"0002"` is 2), as Go's
    /// `strconv.Atoi` reads Kuma's secret-name suffixes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KeyError::InvalidSerial(s.to_owned()));
        }
        s.parse::<u64>()
            .map(KeySerial)
            .map_err(|_| KeyError::InvalidSerial(s.to_owned()))
    }
}

/// An RSA private key that signs tokens. `Debug` shows only the key size and the
/// public key's fingerprint.
#[derive(Clone)]
pub struct SigningKey {
    key: RsaPrivateKey,
    encoding: EncodingKey,
    public: PublicKey,
}

impl SigningKey {
    /// Generates a fresh 2048-bit RSA key, as `kumactl generate signing-key` and the
    /// control plane's default-key bootstrap do.
    pub fn generate() -> Result<Self, KeyError> {
        Self::generate_with_bits(DEFAULT_KEY_BITS)
    }

    /// Generates a key of the given size (at least 2048 bits for RS256).
    pub fn generate_with_bits(bits: usize) -> Result<Self, KeyError> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_rsa(key)
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<Self, KeyError> {
        let der = key
            .to_pkcs1_der()
            .map_err(|e| KeyError::InvalidPrivateKey(e.to_string()))?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let public = PublicKey::from_rsa(key.to_public_key());
        Ok(SigningKey {
            key,
            encoding,
            public,
        })
    }

    /// Reads a PEM private key: PKCS#1 (`RSA PRIVATE KEY`, Kuma's format) or PKCS#8
    /// (`PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let trimmed = pem.trim_start();
        let key = if trimmed.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs1_pem(trimmed)
                .map_err(|e| KeyError::InvalidPrivateKey(e.to_string()))?
        } else if trimmed.starts_with("-----BEGIN PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs8_pem(trimmed)
                .map_err(|e| KeyError::InvalidPrivateKey(e.to_string()))?
        } else {
            return Err(KeyError::InvalidPrivateKey(
                "expected a PEM block of type \"RSA PRIVATE KEY\"".to_owned(),
            ));
        };
        Self::from_rsa(key)
    }

    /// Reads the data of a signing-key secret: PEM, or bare PKCS#1 DER as very old
    /// Kuma versions stored it.
    pub fn from_secret_data(data: &[u8]) -> Result<Self, KeyError> {
        match std::str::from_utf8(data) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => Self::from_pem(text),
            _ => {
                let key = RsaPrivateKey::from_pkcs1_der(data)
                    .map_err(|e| KeyError::InvalidPrivateKey(e.to_string()))?;
                Self::from_rsa(key)
            }
        }
    }

    /// The key as PEM PKCS#1 (`RSA PRIVATE KEY`, LF line endings), byte for byte the
    /// format Kuma stores in signing-key secrets.
    pub fn to_pem(&self) -> String {
        // Encoding an in-memory valid key cannot fail.
        self.key
            .to_pkcs1_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .unwrap_or_default()
    }

    /// The public half, for verification and for `kumactl generate public-key`.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Key size in bits.
    pub fn bits(&self) -> usize {
        self.key.size() * 8
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("bits", &self.bits())
            .field("public_key_sha256", &self.public.fingerprint())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// An RSA public key that verifies tokens.
#[derive(Clone)]
pub struct PublicKey {
    key: RsaPublicKey,
    decoding: DecodingKey,
}

impl PublicKey {
    fn from_rsa(key: RsaPublicKey) -> Self {
        let decoding =
            DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be());
        PublicKey { key, decoding }
    }

    /// Reads a PEM public key: PKCS#1 (`RSA PUBLIC KEY`) or SPKI (`PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let trimmed = pem.trim_start();
        let key = if trimmed.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            RsaPublicKey::from_pkcs1_pem(trimmed)
                .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?
        } else if trimmed.starts_with("-----BEGIN PUBLIC KEY-----") {
            RsaPublicKey::from_public_key_pem(trimmed)
                .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?
        } else {
            return Err(KeyError::InvalidPublicKey(
                "expected a PEM block of type \"RSA PUBLIC KEY\" or \"PUBLIC KEY\"".to_owned(),
            ));
        };
        Ok(Self::from_rsa(key))
    }

    /// The key as PEM PKCS#1 (`RSA PUBLIC KEY`), as `kumactl generate public-key` prints it.
    pub fn to_pem(&self) -> String {
        self.key.to_pkcs1_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Hex SHA-256 of the PKCS#1 DER encoding: safe to log, identifies the key.
    pub fn fingerprint(&self) -> String {
        let der = self
            .key
            .to_pkcs1_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        let digest = Sha256::digest(der);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("sha256", &self.fingerprint())
            .finish()
    }
}

#[derive(Clone, Debug)]
enum KeyEntry {
    Signing(Box<SigningKey>),
    VerifyOnly(PublicKey),
}

impl KeyEntry {
    fn public(&self) -> &PublicKey {
        match self {
            KeyEntry::Signing(key) => key.public_key(),
            KeyEntry::VerifyOnly(key) => key,
        }
    }
}

/// The keys of one token kind (user tokens, zone tokens, or one mesh's dataplane
/// tokens), by serial. The newest private key signs; every key present verifies
/// tokens carrying its serial as `kid`, so tokens survive a rotation until their
/// key's secret is deleted.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: BTreeMap<KeySerial, KeyEntry>,
}

impl KeySet {
    /// An empty set: it neither signs nor verifies.
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds (or replaces) a private key that signs and verifies.
    pub fn insert_signing_key(&mut self, serial: KeySerial, key: SigningKey) {
        self.keys.insert(serial, KeyEntry::Signing(Box::new(key)));
    }

    /// Adds (or replaces) a public key that only verifies, as Kuma's static
    /// `validator.publicKeys` configuration provides.
    pub fn insert_public_key(&mut self, serial: KeySerial, key: PublicKey) {
        self.keys.insert(serial, KeyEntry::VerifyOnly(key));
    }

    /// Removes a key: tokens carrying its serial stop verifying.
    pub fn remove(&mut self, serial: KeySerial) -> bool {
        self.keys.remove(&serial).is_some()
    }

    /// Builds the set from the signing-key secrets of `owner`, given as
    /// `(secret name, secret data)`. Secrets whose names are not this owner's
    /// signing keys are skipped, so a caller may pass every (global) secret.
    pub fn from_secrets<'a>(
        owner: &KeyOwner,
        secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, KeyError> {
        let mut set = KeySet::new();
        for (name, data) in secrets {
            let Some(serial) = owner.signing_key_serial(name) else {
                continue;
            };
            let key =
                SigningKey::from_secret_data(data).map_err(|source| KeyError::InvalidSecret {
                    secret: name.to_owned(),
                    source: Box::new(source),
                })?;
            set.insert_signing_key(serial, key);
        }
        Ok(set)
    }

    /// The newest private key and its serial: the one that signs new tokens.
    pub fn signing_key(&self) -> Option<(KeySerial, &SigningKey)> {
        self.keys
            .iter()
            .rev()
            .find_map(|(serial, entry)| match entry {
                KeyEntry::Signing(key) => Some((*serial, &**key)),
                KeyEntry::VerifyOnly(_) => None,
            })
    }

    /// The key that verifies tokens with this serial.
    pub fn verifying_key(&self, serial: KeySerial) -> Option<&PublicKey> {
        self.keys.get(&serial).map(KeyEntry::public)
    }

    /// The serial a new key should take when rotating (one past the highest, or
    /// [`KeySerial::DEFAULT`] for an empty set).
    pub fn next_serial(&self) -> KeySerial {
        self.keys
            .keys()
            .next_back()
            .map_or(KeySerial::DEFAULT, |s| s.next())
    }

    /// Serials present, oldest first.
    pub fn serials(&self) -> impl Iterator<Item = KeySerial> + '_ {
        self.keys.keys().copied()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod test_keys {
    use std::sync::OnceLock;

    use super::SigningKey;

    /// A few keys generated once per test binary: RSA generation is the slow part.
    pub(crate) fn key(i: usize) -> SigningKey {
        static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
        KEYS.get_or_init(|| {
            (0..3)
                .map(|_| SigningKey::generate().expect("RSA generation"))
                .collect()
        })[i]
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::key;
    use super::*;

    #[test]
    fn generated_key_is_2048_bit_pkcs1_pem_and_round_trips() {
        let k = key(0);
        assert_eq!(k.bits(), 2048);
        let pem = k.to_pem();
        assert!(
            pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{pem}"
        );
        assert!(pem.ends_with("-----END RSA PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(back.to_pem(), pem);
    }

    #[test]
    fn reads_pkcs8_and_legacy_der_secret_data() {
        let k = key(0);
        let pkcs8 = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&k.key, LineEnding::LF).unwrap();
        assert_eq!(
            SigningKey::from_pem(&pkcs8).unwrap().public_key(),
            k.public_key()
        );
        let der = k.key.to_pkcs1_der().unwrap();
        assert_eq!(
            SigningKey::from_secret_data(der.as_bytes())
                .unwrap()
                .public_key(),
            k.public_key()
        );
        assert_eq!(
            SigningKey::from_secret_data(k.to_pem().as_bytes())
                .unwrap()
                .public_key(),
            k.public_key()
        );
    }

    #[test]
    fn rejects_garbage_and_public_keys_as_private_keys() {
        assert!(matches!(
            SigningKey::from_pem("hello"),
            Err(KeyError::InvalidPrivateKey(_))
        ));
        let public_pem = key(0).public_key().to_pem();
        assert!(SigningKey::from_pem(&public_pem).is_err());
        assert!(SigningKey::from_secret_data(b"\x00\x01garbage").is_err());
        let broken = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(SigningKey::from_pem(broken).is_err());
    }

    #[test]
    fn public_key_pem_in_both_encodings() {
        let k = key(0);
        let pkcs1 = k.public_key().to_pem();
        assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----\n"));
        assert_eq!(&PublicKey::from_pem(&pkcs1).unwrap(), k.public_key());
        let spki =
            rsa::pkcs8::EncodePublicKey::to_public_key_pem(&k.public_key().key, LineEnding::LF)
                .unwrap();
        assert_eq!(&PublicKey::from_pem(&spki).unwrap(), k.public_key());
        assert!(PublicKey::from_pem(&k.to_pem()).is_err());
    }

    #[test]
    fn debug_never_shows_private_material() {
        let k = key(0);
        let debug = format!("{k:?}");
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains(&k.public_key().fingerprint()));
        let pem_body: String = k.to_pem().lines().nth(1).unwrap().to_owned();
        assert!(!debug.contains(&pem_body));
        let set_debug = {
            let mut set = KeySet::new();
            set.insert_signing_key(KeySerial(1), k.clone());
            format!("{set:?}")
        };
        assert!(!set_debug.contains(&pem_body));
    }

    #[test]
    fn serials_parse_like_go_atoi() {
        assert_eq!("1".parse::<KeySerial>().unwrap(), KeySerial(1));
        assert_eq!("0002".parse::<KeySerial>().unwrap(), KeySerial(2));
        for bad in ["", "-1", "a", "1a", " 1"] {
            assert!(bad.parse::<KeySerial>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn newest_private_key_signs_and_every_key_verifies() {
        let mut set = KeySet::new();
        assert!(set.signing_key().is_none());
        assert_eq!(set.next_serial(), KeySerial::DEFAULT);
        set.insert_signing_key(KeySerial(1), key(0));
        set.insert_signing_key(KeySerial(3), key(1));
        set.insert_public_key(KeySerial(7), key(2).public_key().clone());
        let (serial, signer) = set.signing_key().unwrap();
        assert_eq!(serial, KeySerial(3), "a verify-only key never signs");
        assert_eq!(signer.public_key(), key(1).public_key());
        assert_eq!(set.verifying_key(KeySerial(1)), Some(key(0).public_key()));
        assert_eq!(set.verifying_key(KeySerial(7)), Some(key(2).public_key()));
        assert_eq!(set.verifying_key(KeySerial(2)), None);
        assert_eq!(set.next_serial(), KeySerial(8));
        assert_eq!(
            set.serials().collect::<Vec<_>>(),
            [KeySerial(1), KeySerial(3), KeySerial(7)]
        );
        assert!(set.remove(KeySerial(3)));
        assert_eq!(set.signing_key().unwrap().0, KeySerial(1));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn builds_from_secrets_of_its_owner_only() {
        let k1 = key(0).to_pem();
        let k2 = key(1).to_pem();
        let other = key(2).to_pem();
        let secrets: Vec<(&str, &[u8])> = vec![
            ("user-token-signing-key-1", k1.as_bytes()),
            ("user-token-signing-key-0002", k2.as_bytes()),
            ("zone-token-signing-key-9", other.as_bytes()),
            ("admin-user-token", b"not a key"),
            ("user-token-signing-key-abc", b"not a key either"),
        ];
        let set = KeySet::from_secrets(&KeyOwner::User, secrets).unwrap();
        assert_eq!(
            set.serials().collect::<Vec<_>>(),
            [KeySerial(1), KeySerial(2)]
        );
        assert_eq!(
            set.signing_key().unwrap().1.public_key(),
            key(1).public_key()
        );

        let broken: Vec<(&str, &[u8])> = vec![("user-token-signing-key-4", b"oops")];
        let err = KeySet::from_secrets(&KeyOwner::User, broken).unwrap_err();
        assert!(
            err.to_string().contains("user-token-signing-key-4"),
            "{err}"
        );
    }
}

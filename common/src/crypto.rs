//! Keys and authenticated encryption. Every stored byte except `config` and
//! the key files is sealed with XChaCha20-Poly1305 under the repository's data
//! key; blob ids are BLAKE3 keyed with a separate id key, so ids reveal nothing
//! about content to someone without the key.

use crate::error::{Error, ErrorKind, Result};
use crate::id::Id;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

/// Bytes of the random nonce that precedes every ciphertext.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag that ends every ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes added to a plaintext by [`MasterKey::seal`].
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The repository's secret keys: one for encryption, one for blob ids.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    #[serde(with = "b64")]
    encrypt: [u8; 32],
    #[serde(with = "b64")]
    id: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Fresh random keys for a new repository.
    pub fn generate() -> MasterKey {
        MasterKey {
            encrypt: rand::random(),
            id: rand::random(),
        }
    }

    /// The id of a blob: BLAKE3 of its plaintext keyed with the id key.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    /// Encrypts `plain`, binding `aad`; output is nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.resize(NONCE_LEN, 0);
        out.extend_from_slice(plain);
        self.seal_in_place(&mut out, aad);
        out
    }

    /// [`MasterKey::seal`] without copying: `buf` holds [`NONCE_LEN`]
    /// bytes of room, then the plaintext; it ends up holding nonce,
    /// ciphertext and tag, exactly what `seal` returns.
    pub fn seal_in_place(&self, buf: &mut Vec<u8>, aad: &[u8]) {
        let cipher = XChaCha20Poly1305::new((&self.encrypt).into());
        let nonce: [u8; NONCE_LEN] = rand::random();
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut buf[NONCE_LEN..])
            .unwrap_or_default();
        buf.extend_from_slice(&tag);
    }

    /// [`MasterKey::open`] into `out` (cleared; its capacity reused), so a
    /// restore decrypting blob after blob allocates nothing.
    pub fn open_into(&self, sealed: &[u8], aad: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if sealed.len() < OVERHEAD {
            return Err(Error::corrupt(format!(
                "ciphertext of {} bytes is shorter than nonce and tag: truncated",
                sealed.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new((&self.encrypt).into());
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        out.clear();
        out.extend_from_slice(ct);
        cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, out, tag.into())
            .map_err(|_| {
                out.clear();
                Error::corrupt("authentication failed: the data was altered or truncated")
            })
    }

    /// Decrypts and authenticates what [`MasterKey::seal`] produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(sealed, aad, &mut out)?;
        Ok(out)
    }
}

/// Most memory a key file may ask Argon2 for: 256 MiB (Seawall writes
/// 64 MiB).
pub const MAX_KDF_MEMORY_KIB: u64 = 256 * 1024;
/// Most Argon2 passes a key file may ask for (Seawall writes 3).
pub const MAX_KDF_PASSES: u64 = 8;
/// Most Argon2 lanes a key file may ask for (Seawall writes 1).
pub const MAX_KDF_LANES: u64 = 8;

/// Argon2id parameters stored beside a wrapped key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Always "argon2id".
    pub algorithm: String,
    /// Memory cost in KiB.
    pub m_cost: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Random salt, base64.
    #[serde(with = "b64_vec")]
    pub salt: Vec<u8>,
}

impl KdfParams {
    /// Defaults that cost about a quarter second and 64 MiB on a server core.
    pub fn default_fresh() -> KdfParams {
        KdfParams {
            algorithm: "argon2id".into(),
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
            salt: rand::random::<[u8; 16]>().to_vec(),
        }
    }

    /// The work a derivation with these parameters costs, in KiB-passes
    /// (memory times passes), to bound what one open may spend.
    pub fn cost(&self) -> u64 {
        u64::from(self.m_cost) * u64::from(self.t_cost)
    }

    /// Refuses parameters no key file Seawall writes has, before any memory
    /// is allocated for them: a planted key file with a 4 TiB memory cost
    /// must be an error, not an aborted process.
    pub fn check_bounds(&self) -> Result<()> {
        let bounds = [
            (
                "m_cost (KiB)",
                u64::from(self.m_cost),
                8 * u64::from(self.p_cost.max(1)),
                MAX_KDF_MEMORY_KIB,
            ),
            ("t_cost", u64::from(self.t_cost), 1, MAX_KDF_PASSES),
            ("p_cost", u64::from(self.p_cost), 1, MAX_KDF_LANES),
            ("salt length", self.salt.len() as u64, 8, 64),
        ];
        for (what, value, min, max) in bounds {
            if value < min || value > max {
                return Err(Error::corrupt(format!(
                    "key file has Argon2 {what} = {value}, outside {min}..={max}: it was not written by seawall; move it out of keys/"
                )));
            }
        }
        Ok(())
    }

    /// Derives the 32-byte key-encryption key from `password`.
    pub fn derive(&self, password: &[u8]) -> Result<[u8; 32]> {
        if self.algorithm != "argon2id" {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("key file uses unknown KDF {:?}", self.algorithm),
            ));
        }
        self.check_bounds()?;
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::corrupt(format!("key file has invalid Argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, &self.salt, &mut out)
            .map_err(|e| Error::corrupt(format!("key derivation failed: {e}")))?;
        Ok(out)
    }
}

/// A key file: the master key sealed under a key derived from a password.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// When the key was added.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Host that added it, for `key list`.
    pub hostname: String,
    /// How the key-encryption key is derived.
    pub kdf: KdfParams,
    /// The sealed master key, base64.
    #[serde(with = "b64_vec")]
    pub wrapped: Vec<u8>,
}

const KEY_AAD: &[u8] = b"seawall key v1";

impl KeyFile {
    /// Wraps `master` under `password` with fresh Argon2id parameters.
    pub fn wrap(master: &MasterKey, password: &[u8], kdf: KdfParams) -> Result<KeyFile> {
        let kek = kdf.derive(password)?;
        let wrapper = MasterKey {
            encrypt: kek,
            id: [0; 32],
        };
        let plain = serde_json::to_vec(master)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("encoding key: {e}")))?;
        Ok(KeyFile {
            created: chrono::Utc::now(),
            hostname: crate::repo::hostname(),
            kdf,
            wrapped: wrapper.seal(&plain, KEY_AAD),
        })
    }

    /// Unwraps the master key; a wrong password is [`ErrorKind::WrongKey`].
    pub fn unwrap_key(&self, password: &[u8]) -> Result<MasterKey> {
        let kek = self.kdf.derive(password)?;
        let wrapper = MasterKey {
            encrypt: kek,
            id: [0; 32],
        };
        let plain = wrapper.open(&self.wrapped, KEY_AAD).map_err(|_| {
            Error::new(
                ErrorKind::WrongKey,
                "wrong password: it opens no key of this repository (check SEAWALL_PASSWORD or --password-file)",
            )
        })?;
        serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(format!("key file decrypts but does not parse: {e}")))
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("key must be 32 bytes"))
    }
}

/// Bytes as base64 text in JSON.
pub(crate) mod b64_vec {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_kdf() -> KdfParams {
        KdfParams {
            m_cost: 64,
            t_cost: 1,
            ..KdfParams::default_fresh()
        }
    }

    #[test]
    fn out_of_bounds_kdf_parameters_are_refused_before_any_allocation() {
        for bad in [
            KdfParams {
                m_cost: u32::MAX,
                ..cheap_kdf()
            },
            KdfParams {
                t_cost: 1_000_000,
                ..cheap_kdf()
            },
            KdfParams {
                p_cost: 0,
                ..cheap_kdf()
            },
            KdfParams {
                salt: vec![],
                ..cheap_kdf()
            },
        ] {
            let err = bad.derive(b"pw").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt);
            assert!(err.to_string().contains("outside"), "{err}");
        }
        assert!(cheap_kdf().derive(b"pw").is_ok());
    }

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"hello", b"blob:1");
        assert_eq!(key.open(&sealed, b"blob:1").unwrap(), b"hello");
        assert!(key.open(&sealed, b"blob:2").is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert_eq!(
            key.open(&flipped, b"blob:1").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert!(key.open(&sealed[..10], b"blob:1").is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let key = MasterKey::generate();
        assert_ne!(key.seal(b"x", b""), key.seal(b"x", b""));
    }

    #[test]
    fn wrong_password_is_wrong_key() {
        let key = MasterKey::generate();
        let file = KeyFile::wrap(&key, b"right", cheap_kdf()).unwrap();
        assert!(file.unwrap_key(b"right").is_ok());
        assert_eq!(
            file.unwrap_key(b"wrong").unwrap_err().kind(),
            ErrorKind::WrongKey
        );
    }

    #[test]
    fn blob_ids_depend_on_the_key() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"data"), a.blob_id(b"data"));
        assert_ne!(a.blob_id(b"data"), b.blob_id(b"data"));
    }
}

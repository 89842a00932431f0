//! Sealing of the hidden payload: key derivation, the header, and authenticated encryption.
//!
//! How it works. The cluster secret (any string) goes through HKDF-SHA256 twice: once with the
//! info string [`KEY_INFO`] to give the 32-byte XChaCha20-Poly1305 key, once with
//! [`FINGERPRINT_INFO`] to give an 8-byte key fingerprint. A payload is a fixed 48-byte
//! [`Header`] followed by the body:
//!
//! ```text
//! header: magic "IMGC" | version u16 | bits u8 | reserved 0u8 | body length u32 |
//!         key fingerprint [8] | nonce [24] | check [4] = SHA-256(previous 44 bytes)[..4]
//! body:   XChaCha20-Poly1305(key, nonce, aad = the 48 header bytes,
//!         plaintext = meta length u32 | postcard(ImageMeta) | secret image bytes) | tag [16]
//! ```
//!
//! All integers are big-endian. The whole header is the associated data, so changing any of
//! it (bits, length, fingerprint) makes the body fail authentication. Opening checks, in order:
//! the magic (else [`Error::NoPayload`]), the check bytes (else [`Error::Tampered`]), the version
//! (else [`Error::Unsupported`]), the fingerprint (else [`Error::WrongKey`]), then the tag (else
//! [`Error::Tampered`]). The check bytes are not a security measure (the tag is): they only let
//! a flipped header bit be reported as tampering rather than as a wrong key.
//!
//! Implementation caveats: the HKDF salt is a constant, so one cluster secret gives one key for
//! every image (the random 24-byte nonce per image keeps that safe); the fingerprint lets anyone
//! holding candidate secrets test them offline, which a strong random cluster secret makes moot;
//! key material is not zeroised on drop.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::codec::metadata::{ImageMeta, FORMAT_VERSION};
use crate::error::{Error, Result};

/// The four bytes every imgcloud payload starts with.
pub const MAGIC: [u8; 4] = *b"IMGC";
/// Length of the sealed header in bytes.
pub const HEADER_LEN: usize = 48;
/// Length of the Poly1305 authentication tag appended to the body.
pub const TAG_LEN: usize = 16;
/// HKDF salt shared by every derivation.
pub const HKDF_SALT: &[u8] = b"imgcloud hkdf salt v1";
/// HKDF info string of the payload encryption key.
pub const KEY_INFO: &[u8] = b"imgcloud payload key v1";
/// HKDF info string of the key fingerprint stored in the header.
pub const FINGERPRINT_INFO: &[u8] = b"imgcloud key fingerprint v1";
/// Environment variable read for the cluster secret when no flag gives it.
pub const SECRET_ENV: &str = "IMGCLOUD_SECRET";
/// Cluster secret used when none is configured; fine for trying things out, never for real use.
pub const DEV_SECRET: &str = "imgcloud-development-secret-not-for-production";
/// Warning binaries print when they fall back to [`DEV_SECRET`].
pub const DEV_SECRET_WARNING: &str = "warning: no cluster secret given (--secret or IMGCLOUD_SECRET); using the built-in development secret, which anyone can read in the source";

/// Where [`resolve_secret`] found the cluster secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The command-line flag.
    Flag,
    /// The [`SECRET_ENV`] environment variable.
    Env,
    /// The built-in [`DEV_SECRET`]; callers should print [`DEV_SECRET_WARNING`].
    Development,
}

/// Picks the cluster secret: the flag if given and non-empty, else [`SECRET_ENV`], else [`DEV_SECRET`].
pub fn resolve_secret(flag: Option<String>) -> (String, SecretSource) {
    if let Some(secret) = flag.filter(|s| !s.is_empty()) {
        return (secret, SecretSource::Flag);
    }
    match std::env::var(SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => (secret, SecretSource::Env),
        _ => (DEV_SECRET.to_string(), SecretSource::Development),
    }
}

/// The payload key and its fingerprint, derived from the cluster secret.
#[derive(Clone)]
pub struct SealKey {
    key: [u8; 32],
    fingerprint: [u8; 8],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey(fingerprint {})", hex::encode(self.fingerprint))
    }
}

/// The parsed 48-byte header that precedes every sealed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload format version.
    pub version: u16,
    /// Low bits used per colour sample for the body (1 or 2).
    pub bits: u8,
    /// Length of the sealed body in bytes, tag included.
    pub body_len: u32,
    /// Fingerprint of the key that sealed the body.
    pub fingerprint: [u8; 8],
    /// XChaCha20 nonce of the body.
    pub nonce: [u8; 24],
}

impl Header {
    /// Serialises the header, check bytes included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[6] = self.bits;
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out[12..20].copy_from_slice(&self.fingerprint);
        out[20..44].copy_from_slice(&self.nonce);
        let check = check_bytes(&out[..44]);
        out[44..48].copy_from_slice(&check);
        out
    }

    /// Parses header bytes, telling a missing payload, a damaged header and a newer version apart.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header> {
        if bytes[0..4] != MAGIC {
            return Err(Error::NoPayload);
        }
        if check_bytes(&bytes[..44]) != bytes[44..48] {
            return Err(Error::Tampered(
                "the payload header's check bytes do not match".into(),
            ));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "the hidden payload has format version {version}, but this build reads only version {FORMAT_VERSION}"
            )));
        }
        let bits = bytes[6];
        if !(1..=2).contains(&bits) || bytes[7] != 0 {
            return Err(Error::Tampered(format!(
                "the payload header says {bits} bits per sample; only 1 or 2 are written"
            )));
        }
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&bytes[12..20]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&bytes[20..44]);
        Ok(Header {
            version,
            bits,
            body_len: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            fingerprint,
            nonce,
        })
    }
}

/// First four bytes of SHA-256, used to notice a damaged header.
fn check_bytes(bytes: &[u8]) -> [u8; 4] {
    let digest = Sha256::digest(bytes);
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Builds the plaintext of a body: metadata length, postcard metadata, then the secret bytes.
pub fn encode_plaintext(meta: &ImageMeta, secret: &[u8]) -> Result<Vec<u8>> {
    let meta_bytes = postcard::to_stdvec(meta)
        .map_err(|e| Error::InvalidInput(format!("the metadata cannot be encoded: {e}")))?;
    let meta_len = u32::try_from(meta_bytes.len())
        .map_err(|_| Error::InvalidInput("the metadata is larger than 4 GiB".into()))?;
    let mut plain = Vec::with_capacity(4 + meta_bytes.len() + secret.len() + TAG_LEN);
    plain.extend_from_slice(&meta_len.to_be_bytes());
    plain.extend_from_slice(&meta_bytes);
    plain.extend_from_slice(secret);
    Ok(plain)
}

impl SealKey {
    /// Derives the payload key and its fingerprint from the cluster secret with HKDF-SHA256.
    pub fn from_secret(secret: &[u8]) -> SealKey {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret);
        let mut key = [0u8; 32];
        let mut fingerprint = [0u8; 8];
        // Both lengths are far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        hk.expand(KEY_INFO, &mut key)
            .expect("32 bytes is a valid HKDF length");
        hk.expand(FINGERPRINT_INFO, &mut fingerprint)
            .expect("8 bytes is a valid HKDF length");
        SealKey { key, fingerprint }
    }

    /// The 8-byte fingerprint written into every header this key seals.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Encrypts a plaintext from [`encode_plaintext`] in place; returns the header and the body.
    pub fn seal(&self, bits: u8, mut plaintext: Vec<u8>) -> Result<([u8; HEADER_LEN], Vec<u8>)> {
        let body_len = u32::try_from(plaintext.len() + TAG_LEN).map_err(|_| {
            Error::InvalidInput(format!(
                "the payload is {} bytes; at most 4 GiB can be hidden",
                plaintext.len()
            ))
        })?;
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let header = Header {
            version: FORMAT_VERSION,
            bits,
            body_len,
            fingerprint: self.fingerprint,
            nonce,
        }
        .to_bytes();
        let cipher = XChaCha20Poly1305::new(&self.key.into());
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &header, &mut plaintext)
            .map_err(|_| Error::InvalidInput("the payload is too large to encrypt".into()))?;
        plaintext.extend_from_slice(&tag);
        Ok((header, plaintext))
    }

    /// Parses header bytes and checks they were sealed by this key.
    pub fn open_header(&self, bytes: &[u8; HEADER_LEN]) -> Result<Header> {
        let header = Header::parse(bytes)?;
        if header.fingerprint != self.fingerprint {
            return Err(Error::WrongKey);
        }
        Ok(header)
    }

    /// Authenticates and decrypts a body; returns the metadata and the secret image bytes.
    pub fn open(&self, header: &Header, mut body: Vec<u8>) -> Result<(ImageMeta, Vec<u8>)> {
        if body.len() != header.body_len as usize || body.len() < TAG_LEN {
            return Err(Error::Tampered(format!(
                "the body is {} bytes but the header says {}",
                body.len(),
                header.body_len
            )));
        }
        let tag_at = body.len() - TAG_LEN;
        let tag = chacha20poly1305::Tag::clone_from_slice(&body[tag_at..]);
        body.truncate(tag_at);
        let cipher = XChaCha20Poly1305::new(&self.key.into());
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&header.nonce),
                &header.to_bytes(),
                &mut body,
                &tag,
            )
            .map_err(|_| {
                Error::Tampered(format!(
                    "authentication failed over the {} sealed bytes",
                    header.body_len
                ))
            })?;
        decode_plaintext(body)
    }
}

/// Splits an authenticated plaintext into metadata and secret bytes.
fn decode_plaintext(mut plain: Vec<u8>) -> Result<(ImageMeta, Vec<u8>)> {
    let bad = |what: String| Error::Tampered(format!("the decrypted payload is malformed: {what}"));
    if plain.len() < 4 {
        return Err(bad(format!("{} bytes is too short", plain.len())));
    }
    let meta_len = u32::from_be_bytes([plain[0], plain[1], plain[2], plain[3]]) as usize;
    let meta_end = 4usize
        .checked_add(meta_len)
        .filter(|&end| end <= plain.len())
        .ok_or_else(|| bad(format!("metadata of {meta_len} bytes does not fit")))?;
    let meta: ImageMeta =
        postcard::from_bytes(&plain[4..meta_end]).map_err(|e| bad(e.to_string()))?;
    plain.drain(..meta_end);
    Ok((meta, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ImageMeta {
        ImageMeta::new("alice", vec!["bob=5".parse().unwrap()]).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let key = SealKey::from_secret(b"s3cret");
        let m = meta();
        let (header, body) = key
            .seal(1, encode_plaintext(&m, b"pixels").unwrap())
            .unwrap();
        let parsed = key.open_header(&header).unwrap();
        assert_eq!(parsed.body_len as usize, body.len());
        assert_eq!(key.open(&parsed, body).unwrap(), (m, b"pixels".to_vec()));
    }

    #[test]
    fn other_key_is_wrong_key_and_flips_are_tampered() {
        let key = SealKey::from_secret(b"one");
        let (header, body) = key
            .seal(2, encode_plaintext(&meta(), b"x").unwrap())
            .unwrap();
        let other = SealKey::from_secret(b"two");
        assert!(matches!(other.open_header(&header), Err(Error::WrongKey)));
        let mut bad = header;
        bad[0] ^= 1;
        assert!(matches!(key.open_header(&bad), Err(Error::NoPayload)));
        for byte in 4..HEADER_LEN {
            let mut bad = header;
            bad[byte] ^= 0x10;
            assert!(
                matches!(key.open_header(&bad), Err(Error::Tampered(_))),
                "byte {byte}"
            );
        }
        let parsed = key.open_header(&header).unwrap();
        let mut bad_body = body.clone();
        bad_body[0] ^= 1;
        assert!(matches!(
            key.open(&parsed, bad_body),
            Err(Error::Tampered(_))
        ));
    }

    #[test]
    fn secret_resolution_prefers_the_flag() {
        let (s, src) = resolve_secret(Some("flag".into()));
        assert_eq!((s.as_str(), src), ("flag", SecretSource::Flag));
    }
}

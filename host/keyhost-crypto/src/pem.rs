//! Password-protected PEM private keys (the `tls.password` of KES configurations):
//! OpenSSL's traditional encryption (`Proc-Type: 4,ENCRYPTED`, `DEK-Info:
//! AES-256-CBC,…`, what `kes identity new --encrypt` writes) and PKCS#8 `ENCRYPTED
//! PRIVATE KEY` (PBES2).
//!
//! This module only decrypts. Whether the result is a key the TLS library can use
//! is the caller's check: CBC padding alone catches most wrong passwords, not all.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

/// The DER encoding a decrypted key is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// PKCS#8 `PrivateKeyInfo` (any algorithm).
    Pkcs8,
    /// PKCS#1 `RSAPrivateKey` (`RSA PRIVATE KEY`).
    Pkcs1,
    /// SEC1 `ECPrivateKey` (`EC PRIVATE KEY`).
    Sec1,
}

/// A decrypted private key: DER, zeroized when dropped, and never shown by
/// `Debug`.
pub struct DecryptedKey {
    /// Its encoding.
    pub format: KeyFormat,
    /// The key.
    pub der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DecryptedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptedKey")
            .field("format", &self.format)
            .field("der", &format_args!("<{} bytes>", self.der.len()))
            .finish()
    }
}

/// Why an encrypted key could not be decrypted. The text names what is wrong and
/// never holds key material or the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PemError(String);

impl From<&str> for PemError {
    fn from(what: &str) -> Self {
        Self(what.to_owned())
    }
}

/// Whether PEM text holds an encrypted private key.
pub fn is_encrypted(pem: &str) -> bool {
    is_pkcs8_encrypted(pem) || pem.contains("Proc-Type: 4,ENCRYPTED")
}

/// Whether PEM text holds a PKCS#8 `ENCRYPTED PRIVATE KEY` (rather than a key in
/// OpenSSL's traditional encryption).
pub fn is_pkcs8_encrypted(pem: &str) -> bool {
    pem.contains("BEGIN ENCRYPTED PRIVATE KEY")
}

/// Decrypts an encrypted PEM private key with `password`.
pub fn decrypt(pem: &str, password: &str) -> Result<DecryptedKey, PemError> {
    if is_pkcs8_encrypted(pem) {
        return pkcs8(pem, password);
    }
    traditional(pem, password)
}

/// The first PEM block whose label ends with `label_suffix`: its label, its
/// `Name: value` headers and its base64 text.
fn block<'a>(pem: &'a str, label_suffix: &str) -> Option<(&'a str, Vec<&'a str>, String)> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = &pem[begin + 11..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    if !label.ends_with(label_suffix) {
        return None;
    }
    let body = &rest[label_end + 5..];
    let end = body.find("-----END ")?;
    let mut headers = Vec::new();
    let mut data = String::new();
    for line in body[..end].lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains(':') {
            headers.push(line);
        } else {
            data.push_str(line);
        }
    }
    Some((label, headers, data))
}

fn pkcs8(pem: &str, password: &str) -> Result<DecryptedKey, PemError> {
    let (_, _, data) = block(pem, "ENCRYPTED PRIVATE KEY").ok_or("no ENCRYPTED PRIVATE KEY block")?;
    let der = Zeroizing::new(B64.decode(data).map_err(|_| "the key is not valid base64")?);
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| PemError(format!("not a PKCS#8 key: {e}")))?;
    let document = info
        .decrypt(password.as_bytes())
        .map_err(|_| "wrong password, or an unsupported encryption scheme")?;
    Ok(DecryptedKey {
        format: KeyFormat::Pkcs8,
        der: Zeroizing::new(document.as_bytes().to_vec()),
    })
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration: the key of traditional
/// PEM encryption, salted with the first 8 bytes of the IV.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut previous = Zeroizing::new(Vec::new());
    while key.len() < len {
        let mut md5 = Md5::new();
        md5.update(&*previous);
        md5.update(password);
        md5.update(salt);
        *previous = md5.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(len);
    key
}

fn traditional(pem: &str, password: &str) -> Result<DecryptedKey, PemError> {
    let (label, headers, data) = block(pem, "PRIVATE KEY").ok_or("no PRIVATE KEY block")?;
    let info = headers
        .iter()
        .find_map(|h| h.strip_prefix("DEK-Info:"))
        .ok_or("an encrypted key without DEK-Info")?
        .trim();
    let (cipher, iv_hex) = info.split_once(',').ok_or("malformed DEK-Info")?;
    let iv = hex::decode(iv_hex.trim()).map_err(|_| "malformed DEK-Info IV")?;
    let key_len = match cipher {
        "AES-128-CBC" => 16,
        "AES-192-CBC" => 24,
        "AES-256-CBC" => 32,
        other => {
            return Err(PemError(format!(
                "unsupported key encryption {other}; re-encrypt the key with AES-256-CBC"
            )));
        }
    };
    if iv.len() != 16 {
        return Err("malformed DEK-Info IV".into());
    }
    let key = bytes_to_key(password.as_bytes(), &iv[..8], key_len);
    let mut buf = Zeroizing::new(B64.decode(data).map_err(|_| "the key is not valid base64")?);
    let wrong = || PemError::from("wrong password");
    let plain_len = match key_len {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| wrong())?
            .len(),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| wrong())?
            .len(),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| wrong())?
            .len(),
    };
    buf.truncate(plain_len);
    let format = match label {
        "RSA PRIVATE KEY" => KeyFormat::Pkcs1,
        "EC PRIVATE KEY" => KeyFormat::Sec1,
        _ => KeyFormat::Pkcs8,
    };
    Ok(DecryptedKey { format, der: buf })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        let traditional = |info: &str, body: &str| {
            format!(
                "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n{info}\n\n{body}\n-----END EC PRIVATE KEY-----\n"
            )
        };
        let iv = "DEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF";
        for (pem, reason) in [
            (traditional("", "AAAA"), "without DEK-Info"),
            (traditional("DEK-Info: AES-256-CBC", "AAAA"), "malformed DEK-Info"),
            (
                traditional("DEK-Info: AES-256-CBC,0011", "AAAA"),
                "malformed DEK-Info IV",
            ),
            (
                traditional("DEK-Info: DES-EDE3-CBC,0011223344556677", "AAAA"),
                "re-encrypt the key with AES-256-CBC",
            ),
            (traditional(iv, "not base64!"), "not valid base64"),
            (traditional(iv, "AAAAAAAAAAAAAAAAAAAAAA=="), "wrong password"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n".into(),
                "not a PKCS#8 key",
            ),
            ("no PEM at all".into(), "no PRIVATE KEY block"),
        ] {
            let error = decrypt(&pem, "s3cr3t-pw").unwrap_err().to_string();
            assert!(error.contains(reason), "{pem}: {error}");
            assert!(!error.contains("s3cr3t"), "the password is never shown: {error}");
        }
        assert!(is_encrypted(&traditional(iv, "")));
        assert!(!is_encrypted("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = DecryptedKey {
            format: KeyFormat::Sec1,
            der: Zeroizing::new(vec![0xAB; 4]),
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("<4 bytes>") && !shown.contains("171"), "{shown}");
    }

    /// `EVP_BytesToKey(AES-256-CBC, MD5, salt, "password", 1)`, as
    /// `openssl enc -aes-256-cbc -md md5 -S 0001020304050607 -pass pass:password -P`
    /// prints it.
    #[test]
    fn bytes_to_key_matches_openssl() {
        let key = bytes_to_key(b"password", &[0, 1, 2, 3, 4, 5, 6, 7], 32);
        assert_eq!(
            hex::encode_upper(&*key),
            "B03096345E805D3AA4392D2E72791DFB13E12D3F61094A3FC347ACE86B99ADA6"
        );
    }
}

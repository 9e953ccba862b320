//! Password-protected PEM private keys (`tls.password`): OpenSSL's traditional
//! encryption (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: AES-256-CBC,…`, what
//! `kes identity new --encrypt` writes) and PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2).

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use zeroize::Zeroizing;

/// Why an encrypted key could not be opened.
pub(crate) type KeyResult = Result<PrivateKeyDer<'static>, String>;

/// Whether PEM text holds an encrypted private key.
pub(crate) fn is_encrypted(pem: &str) -> bool {
    pem.contains("BEGIN ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED")
}

/// Decrypts an encrypted PEM private key with `password`.
pub(crate) fn decrypt(pem: &str, password: &str) -> KeyResult {
    if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return pkcs8(pem, password);
    }
    traditional(pem, password)
}

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

fn pkcs8(pem: &str, password: &str) -> KeyResult {
    let (_, _, data) = block(pem, "ENCRYPTED PRIVATE KEY").ok_or("no ENCRYPTED PRIVATE KEY block")?;
    let der = Zeroizing::new(B64.decode(data).map_err(|_| "the key is not valid base64")?);
    let info =
        pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| format!("not a PKCS#8 key: {e}"))?;
    let document = info
        .decrypt(password.as_bytes())
        .map_err(|_| "wrong password, or an unsupported encryption scheme")?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        document.as_bytes().to_vec(),
    )))
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration: the key of traditional
/// PEM encryption, salted with the first 8 bytes of the IV.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < len {
        let mut md5 = Md5::new();
        md5.update(&previous);
        md5.update(password);
        md5.update(salt);
        previous = md5.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(len);
    key
}

fn traditional(pem: &str, password: &str) -> KeyResult {
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
            return Err(format!(
                "unsupported key encryption {other}; re-encrypt the key with AES-256-CBC"
            ));
        }
    };
    if iv.len() != 16 {
        return Err("malformed DEK-Info IV".into());
    }
    let key = bytes_to_key(password.as_bytes(), &iv[..8], key_len);
    let mut buf = Zeroizing::new(B64.decode(data).map_err(|_| "the key is not valid base64")?);
    let wrong = || "wrong password".to_owned();
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
    let der = buf[..plain_len].to_vec();
    let key = match label {
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
        _ => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
    };
    // CBC padding alone catches only most wrong passwords: make sure it is a key.
    crate::tls::provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| wrong())?;
    Ok(key)
}

//! Server private keys protected by a password (`tls.password`), made by OpenSSL.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::process::Command;

use keyhost_tls::load_key;

fn sh(command: &str) -> Vec<u8> {
    let out = Command::new("sh").arg("-c").arg(command).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn encrypted_keys_of_both_kinds_decrypt_to_the_key_openssl_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cases = [
        (
            "ec-legacy",
            "EC -pkeyopt ec_paramgen_curve:P-256",
            "-aes256 -traditional",
        ),
        (
            "rsa-legacy",
            "RSA -pkeyopt rsa_keygen_bits:2048",
            "-aes128 -traditional",
        ),
        ("ec-pkcs8", "EC -pkeyopt ec_paramgen_curve:P-256", "-aes256"),
        ("ed-pkcs8", "ED25519", "-aes256"),
    ];
    for (name, algorithm, encrypt) in cases {
        sh(&format!(
            "openssl genpkey -algorithm {algorithm} -out {d}/{name}.plain 2>/dev/null && \
             openssl pkey -in {d}/{name}.plain {encrypt} -passout pass:s3cret -out {d}/{name}.key"
        ));
        let path = dir.path().join(format!("{name}.key"));
        let key = load_key(&path, Some("s3cret")).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The same key as OpenSSL decrypts: compare the public keys.
        std::fs::write(dir.path().join(format!("{name}.der")), key.secret_der()).unwrap();
        let ours = sh(&format!("openssl pkey -inform DER -in {d}/{name}.der -pubout"));
        let theirs = sh(&format!("openssl pkey -in {d}/{name}.key -passin pass:s3cret -pubout"));
        assert_eq!(ours, theirs, "{name}");

        let wrong = load_key(&path, Some("wrong")).unwrap_err().to_string();
        assert!(wrong.contains("cannot decrypt the private key"), "{name}: {wrong}");
        let missing = load_key(&path, None).unwrap_err().to_string();
        assert!(
            missing.contains("give its password as tls.password"),
            "{name}: {missing}"
        );
    }
}

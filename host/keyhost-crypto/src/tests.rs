//! Golden vectors from KES's own tests (see the wire spec, §11), and round trips.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;

fn b64(s: &str) -> Vec<u8> {
    B64.decode(s).expect("vector is base64")
}

fn key(alg: Algorithm, b: &str) -> SecretKey {
    SecretKey::new(alg, b64(b).try_into().expect("32 bytes"))
}

const ZERO: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const ZERO16: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
const K2: &str = "dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU=";

enum Ct {
    Json(&'static str),
    Bin(&'static str),
}

fn bytes(ct: &Ct) -> Vec<u8> {
    match ct {
        Ct::Json(s) => s.as_bytes().to_vec(),
        Ct::Bin(s) => b64(s),
    }
}

/// §11.1: `internal/crypto/key_test.go` decrypt vectors (newest KES), ok cases.
#[test]
fn newest_kes_decrypt_vectors_open() {
    use Algorithm::*;
    let cases: &[(Algorithm, &str, &str, &str, Ct)] = &[
        (
            Aes256,
            ZERO,
            ZERO16,
            "",
            Ct::Json(
                r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            ),
        ),
        (
            ChaCha20,
            ZERO,
            ZERO16,
            "",
            Ct::Json(
                r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#,
            ),
        ),
        (
            ChaCha20,
            ZERO,
            ZERO16,
            "",
            Ct::Json(
                r#"{"aead":"ChaCha20Poly1305","id":"66687aadf862bd776c8fc18b8e9f8e20","iv":"EC0eZp7Pqt+LnkOae5xaAg==","nonce":"X1ejXKmH/ugFZPkk","bytes":"wIGBTDs6aOvsqJfekZ0PYRT/OHyFX2TXqeNwl1SLXOI="}"#,
            ),
        ),
        (
            Aes256,
            ZERO,
            ZERO16,
            "",
            Ct::Bin(
                "lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=",
            ),
        ),
        (
            ChaCha20,
            ZERO,
            ZERO16,
            "",
            Ct::Bin(
                "lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu",
            ),
        ),
        (
            Aes256,
            ZERO,
            ZERO16,
            "",
            Ct::Bin("zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc"),
        ),
        (
            Aes256,
            K2,
            "CLcJoykFCWZDkEIiUq9bJRqwCwW9ZDvdgu8EMA==",
            ZERO16,
            Ct::Bin("s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac"),
        ),
        (
            ChaCha20,
            K2,
            "CLcJoykFCWZDkEIiUq9bJRqwCwW9ZDvdgu8EMA==",
            ZERO16,
            Ct::Bin("gO4woRIswAJdjUjW7z2ApsSQxJlwB24yjLrmH4eI7sB0uh5nfEJfk9ybTPFft5FRFaZCVBmzhx7OJs9n0WWtxH3sySIxecIK"),
        ),
    ];
    for (i, (alg, k, pt, ad, ct)) in cases.iter().enumerate() {
        let opened = key(*alg, k)
            .open(&bytes(ct), &b64(ad))
            .unwrap_or_else(|e| panic!("vector {i}: {e}"));
        assert_eq!(&opened[..], &b64(pt)[..], "vector {i}");
    }
}

/// §11.1 and §11.3: failing vectors, with the v0.16 error kinds.
#[test]
fn legacy_decrypt_vectors_fail_with_the_right_error() {
    use Algorithm::*;
    let cases: &[(Algorithm, &str, DecryptError)] = &[
        (
            Aes256,
            r#"{"aead":"AES-256-GCM","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            DecryptError::UnsupportedAlgorithm,
        ),
        (
            Aes256,
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"EjOY4JKqjIrPmQ5z1KSR8zlhggY=","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            DecryptError::InvalidIvSize,
        ),
        (
            ChaCha20,
            r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"SXAbms731/c=","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#,
            DecryptError::InvalidNonceSize,
        ),
        (
            Aes256,
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"efY+4kYF9n8=","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            DecryptError::InvalidNonceSize,
        ),
        (
            Aes256,
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"QTza1g5oX3f9cGJMbY1xJwWPj1F7R2VnNl6XpFKYQy0="}"#,
            DecryptError::NotAuthentic,
        ),
        (
            ChaCha20,
            r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"TTi8pkO+Jh1JWAHvPxZeUk/iVoBPUCE4ZSVGBy3fW2s="}"#,
            DecryptError::NotAuthentic,
        ),
        (
            Aes256,
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256" "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            DecryptError::Malformed,
        ),
        (
            Aes256,
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256", "id":"00010203040506070809101112131415", "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            DecryptError::KeyIdMismatch,
        ),
    ];
    for (i, (alg, ct, want)) in cases.iter().enumerate() {
        let got = key(*alg, ZERO).open(ct.as_bytes(), b"");
        assert_eq!(got.err(), Some(*want), "vector {i}");
    }
}

/// A v0.16 ciphertext records its AEAD; a type-less v0.16 key (parsed as AES256)
/// must still open a ChaCha20 ciphertext made on a CPU without AES acceleration.
#[test]
fn the_ciphertexts_own_algorithm_is_honoured() {
    let ct = r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#;
    let record = KeyRecord::parse(format!(r#"{{"bytes":"{ZERO}"}}"#).as_bytes()).unwrap();
    assert_eq!(record.key.algorithm(), Algorithm::Aes256);
    assert_eq!(&record.key.open(ct.as_bytes(), b"").unwrap()[..], &b64(ZERO16)[..]);
}

/// §11.4: v0.16 integration vectors (import, then decrypt the API's base64).
#[test]
fn v016_import_vectors() {
    let cases = [
        (
            ZERO,
            ZERO,
            "",
            "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaXYiOiJ1SUlmSG1OanY2MGRBbUlRL0haT3JBPT0iLCJub25jZSI6IlNEdi8wTlpWaG02R1lGS0wiLCJieXRlcyI6InBqU204UDkyRXlzZE5GZW4rQWdJUEQxeWl4KzNmWTZvUkE0SGdXYzdlZ1J5ckZtNzJ0Z1dYUitFTVlrRHZxYmUifQ==",
        ),
        (
            ZERO,
            "FO+Mnrs7Lm/+ejCikk2Xxh1ptfPK8eBwk08WqOTIQ38=",
            "",
            "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaXYiOiJURWR5c0RaSlpBUExRd1FXdnhTL2R3PT0iLCJub25jZSI6ImIxbGphZVBiR0RnUUtwVkkiLCJieXRlcyI6IkxRWHBSS0Jra1UzbjJ0bVVzT09hOS9YN1lJRGdTU2VWNXZCcm9NWXhDNGtvMkNWd25MaFB5WXNrZVN6UkM1MWwifQ==",
        ),
        (
            "Ocxv4Vf3eur17x6R0mO6P15KPj+L7h2qpe6ZxRy5eiE=",
            "WKDdYkXJ21/HD9lNNBdbUJ3UuwoND/a7eC5bh+0Tbn2DeFSp5IzDe8bOgqK+7F7ortyViprO7Zwt5GF67/ooXQ==",
            "Eb2sb9zyRPKXbgu5",
            "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaXYiOiJGd043WU04ZlVzU1loUFdzZVBmRUt3PT0iLCJub25jZSI6ImFoeG9GYmh1V0IzVHZma1oiLCJieXRlcyI6Im9rY241MUZwNUJsZEoxbGN3ZThLREJXZUhzZEhVQllaaUNkUWxrQXREak9rV1R6TlZvWW05ZEswRXRPZmw3MG1zNVZWSmxqdnZWNTF0VFFhSWFDK2NZTndUSjl5VXNYdHpkUUR2L0lKdHFvPSJ9",
        ),
    ];
    for (i, (k, pt, ctx, ct)) in cases.iter().enumerate() {
        let opened = key(Algorithm::Aes256, k)
            .open(&b64(ct), &b64(ctx))
            .unwrap_or_else(|e| panic!("vector {i}: {e}"));
        assert_eq!(&opened[..], &b64(pt)[..], "vector {i}");
    }
}

/// §11.5: 2023 gateway vectors, including the context that must match.
#[test]
fn gateway_vectors_2023() {
    let k = key(Algorithm::Aes256, "pQLPe6/f87AMSItvZzEbrxYdRUzmM81ziXF95HOFE4Y=");
    assert_eq!(k.key_id(), "62cf2130669272f39f7de6058cf37123");
    let zero32 = [0u8; 32];
    let cases: [(&str, &[u8], &[u8]); 4] = [
        (
            "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaWQiOiI2MmNmMjEzMDY2OTI3MmYzOWY3ZGU2MDU4Y2YzNzEyMyIsIml2IjoiQkpDU2FRZ1MrMUovZ3ZhcWZNaXJYUT09Iiwibm9uY2UiOiJHZkllRHdSdjByRDBIYncrIiwiYnl0ZXMiOiIvNndhelRQbnREMHhra0w5RWFGWjduK0s5SEJhem5YaDlKYjcifQ==",
            b"",
            b"Hello World",
        ),
        (
            "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaWQiOiI2MmNmMjEzMDY2OTI3MmYzOWY3ZGU2MDU4Y2YzNzEyMyIsIml2IjoiYVN0OExGZWE2UUlFNVhhaEpTQ0w0Zz09Iiwibm9uY2UiOiJISjYyYndDcW1vMWVncHoxIiwiYnl0ZXMiOiJ1c291ZjhTb0Z5R1dybStOV0ZUQXFnPT0ifQ==",
            &zero32,
            b"",
        ),
        (
            "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaWQiOiI2MmNmMjEzMDY2OTI3MmYzOWY3ZGU2MDU4Y2YzNzEyMyIsIml2Ijoia3dLalZpcTBHSXpnMWJVcDM3QVNwZz09Iiwibm9uY2UiOiJ3Q0lJZEorcys3NTdGNjZFIiwiYnl0ZXMiOiIwYkZDSEY3NFUwZ29CT2w2d1lTaGE2K3FFV2FtNVZYYllxTW4ifQ==",
            &zero32,
            b"Hello World",
        ),
        (
            "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaWQiOiI2MmNmMjEzMDY2OTI3MmYzOWY3ZGU2MDU4Y2YzNzEyMyIsIml2IjoiR3pFcFI0am1JMWRWTzJsdXZvdG9xQT09Iiwibm9uY2UiOiJCV2c1eE54eU4yck9sLzV3IiwiYnl0ZXMiOiJmVXlycTI1Q3VDeEp4TW5XOXVZSSsrSjVsVzdGbVFtcmZpdEoifQ==",
            b"Hello World Context",
            b"Hello World",
        ),
    ];
    for (i, (ct, ctx, pt)) in cases.iter().enumerate() {
        assert_eq!(
            &k.open(&b64(ct), ctx).unwrap_or_else(|e| panic!("vector {i}: {e}"))[..],
            *pt,
            "vector {i}"
        );
    }
    // The same ciphertext without its context must fail.
    assert_eq!(k.open(&b64(cases[3].0), b"").err(), Some(DecryptError::NotAuthentic));
    let ct4 = "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaWQiOiI2MmNmMjEzMDY2OTI3MmYzOWY3ZGU2MDU4Y2YzNzEyMyIsIml2IjoiRDc5M3VKOEtuUjlrUjBzUm9QNGt5Zz09Iiwibm9uY2UiOiJOQ245dkFqQUhla0QyQW9OIiwiYnl0ZXMiOiJrZGZVRjErMVIvSEFXRkhrU3RjRGdkOHlya3hSUmYvNFV4ZmtPTGxiWjZJM0IxWml3MG0yUjZkM2JZalE3NVZ6In0=";
    assert_eq!(
        &k.open(&b64(ct4), &b64("3L+XLd07zRgH+JT/TDGj5Q==")).unwrap()[..],
        &b64("20p8/WDxkN2ekJWmOpabC48urRMnhfbAUOUB6TvRAN8=")[..]
    );
}

#[test]
fn key_ids() {
    assert_eq!(
        key(Algorithm::Aes256, ZERO).key_id(),
        "66687aadf862bd776c8fc18b8e9f8e20"
    );
}

#[test]
fn seal_open_round_trips_in_every_format_and_algorithm() {
    for alg in [Algorithm::Aes256, Algorithm::ChaCha20] {
        let k = SecretKey::generate(alg);
        for format in [CiphertextFormat::Raw, CiphertextFormat::Json] {
            for (pt, ad) in [(&b""[..], &b""[..]), (b"hello", b"{}"), (&[7u8; 4096][..], b"ctx")] {
                let ct = k.seal(pt, ad, format);
                assert_eq!(&k.open(&ct, ad).unwrap()[..], pt, "{alg} {format:?}");
                // One raw ciphertext in 256 starts with '{' and then fails as the
                // JSON it is not (KES v0.16: `invalid ciphertext`).
                let want = if format == CiphertextFormat::Raw && ct.first() == Some(&b'{') {
                    DecryptError::Malformed
                } else {
                    DecryptError::NotAuthentic
                };
                assert_eq!(k.open(&ct, b"other").err(), Some(want));
                let mut flipped = ct.clone();
                let mid = flipped.len() / 2;
                flipped[mid] ^= 1;
                assert!(k.open(&flipped, ad).is_err());
            }
        }
        // Raw: len(P) + 16 + 28 bytes.
        assert_eq!(k.seal(&[0; 32], b"", CiphertextFormat::Raw).len(), 32 + 44);
        // Another key fails.
        let ct = k.seal(b"x", b"", CiphertextFormat::Raw);
        let want = if ct.first() == Some(&b'{') {
            DecryptError::Malformed
        } else {
            DecryptError::NotAuthentic
        };
        assert_eq!(SecretKey::generate(alg).open(&ct, b"").err(), Some(want));
    }
}

#[test]
fn garbage_never_panics() {
    let k = SecretKey::generate(Algorithm::Aes256);
    for ct in [
        &b""[..],
        b"{",
        b"\x95",
        b"\x95\x01",
        &[0u8; 43],
        &[0x95; 80],
        b"{}",
        b"null",
    ] {
        assert!(k.open(ct, b"").is_err());
    }
}

/// §11.1: stored-key parsing vectors of every era.
#[test]
fn stored_key_vectors() {
    let v = [
        (format!(r#"{{"bytes":"{ZERO}"}}"#), ZERO, Algorithm::Aes256),
        (
            r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE="}"#.into(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=",
            Algorithm::Aes256,
        ),
        (
            r#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E="}"#.into(),
            "J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E=",
            Algorithm::Aes256,
        ),
    ];
    for (stored, k, alg) in &v {
        let r = KeyRecord::parse(stored.as_bytes()).unwrap();
        assert_eq!(r.key, key(*alg, k));
        assert!(r.hmac.is_none() && r.created_at.is_none() && r.created_by.is_none());
    }

    let r = KeyRecord::parse(br#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E=","algorithm":"AES256-GCM_SHA256","created_at":"2009-11-10T23:00:00Z","created_by":"40235905b7b83e0537a002db523cd019d6709b899adc249c957860cd00fa9f78"}"#).unwrap();
    assert_eq!(
        hex::encode(r.key.expose_bytes()),
        "27caa63b2115d9c7b6ca8002fb9b7463b0923ff853329a4bed71e9027c9cfb41"
    );
    assert_eq!(r.key.algorithm(), Algorithm::Aes256);
    assert_eq!(r.created_at.unwrap().unix_timestamp(), 1_257_894_000);
    assert_eq!(
        r.created_by.as_deref(),
        Some("40235905b7b83e0537a002db523cd019d6709b899adc249c957860cd00fa9f78")
    );

    let r = KeyRecord::parse(br#"{"bytes":"9ew6BCae3+13sniOUwttEJ62amg98YXc0OW0WBhNiCY=","algorithm":"XCHACHA20-POLY1305","created_at":"2009-11-10T23:00:00Z","created_by":"189d9de5331e3ee8abe9e4bd40d474ad621d79ccf83a711f6ac68050eb15a52a"}"#).unwrap();
    assert_eq!(
        hex::encode(r.key.expose_bytes()),
        "f5ec3a04269edfed77b2788e530b6d109eb66a683df185dcd0e5b458184d8826"
    );
    assert_eq!(r.key.algorithm(), Algorithm::ChaCha20);

    let current = "CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy";
    let r = KeyRecord::parse(current.as_bytes()).unwrap();
    assert_eq!(
        r.key,
        key(Algorithm::Aes256, "yIcbtes33gW7BuUkmivh/t/qtuoCXsPCwtqIijLPQPY=")
    );
    assert_eq!(
        r.hmac.as_ref().unwrap().expose_bytes()[..],
        b64("nLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9Hg=")[..]
    );
    let created = time::OffsetDateTime::parse(
        "2024-01-12T11:39:20.886816+01:00",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(r.created_at, Some(created));
    assert_eq!(
        r.created_by.as_deref(),
        Some("3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22")
    );
    // Writing it back reproduces KES's bytes exactly.
    assert_eq!(&r.encode(RecordFormat::Current).unwrap()[..], current.as_bytes());

    for bad in [
        format!(r#""bytes":"{ZERO}"}}"#),
        format!(r#"{{bytes":"{ZERO}"}}"#),
        format!(r#"{{"bytes""{ZERO}"}}"#),
        format!(r#""bytes":"{ZERO}""#),
        r#"{"bytes":"AAAA"}"#.to_owned(),
        r#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E=","algorithm":"DES"}"#.to_owned(),
        String::new(),
    ] {
        assert!(KeyRecord::parse(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn records_round_trip_and_v016_records_have_no_hmac() {
    let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let r = KeyRecord::generate(Algorithm::ChaCha20, "abc", now);
    let parsed = KeyRecord::parse(&r.encode(RecordFormat::Current).unwrap()).unwrap();
    assert_eq!(parsed, r);
    let v016 = r.encode(RecordFormat::V016).unwrap();
    assert!(v016.starts_with(br#"{"bytes":""#));
    let old = KeyRecord::parse(&v016).unwrap();
    assert_eq!(old.key.expose_bytes(), r.key.expose_bytes());
    assert!(old.hmac.is_none());
    assert_eq!(
        old.encode(RecordFormat::Current).err(),
        Some(RecordError::MissingHmacKey)
    );
    assert_eq!(HmacKey::new([0; 32]).sign(b"m"), HmacKey::new([0; 32]).sign(b"m"));
    assert_ne!(HmacKey::new([0; 32]).sign(b"m"), HmacKey::new([0; 32]).sign(b"n"));
}

#[test]
fn secrets_do_not_print() {
    let k = key(Algorithm::Aes256, "yIcbtes33gW7BuUkmivh/t/qtuoCXsPCwtqIijLPQPY=");
    let shown = format!("{k:?} {:?}", HmacKey::new([1; 32]));
    assert!(!shown.contains("yIcb") && !shown.contains("200, 135"), "{shown}");
}

/// A raw ciphertext that happens to start with '{' (one in 256) still opens: it is
/// tried as raw when it is no JSON ciphertext.
#[test]
fn raw_ciphertexts_starting_with_a_brace_open() {
    let key = SecretKey::new(Algorithm::Aes256, [9; 32]);
    let sealed = (0..100_000)
        .map(|_| key.seal(b"plain", b"ctx", CiphertextFormat::Raw))
        .find(|c| c.first() == Some(&b'{'))
        .expect("one in 256 ciphertexts starts with '{'");
    assert_eq!(&key.open(&sealed, b"ctx").unwrap()[..], b"plain");
}

/// JSON ciphertexts are read as KES v0.16.1 read them (Go's `json.Unmarshal`,
/// checked side by side in tests/compat): unknown fields are ignored, missing ones
/// are empty, and the checks come in its order — key ID, IV, algorithm, nonce.
#[test]
fn json_ciphertexts_are_read_as_kes_v016_read_them() {
    let k = key(Algorithm::Aes256, K2);
    let sealed = k.seal(b"hello", b"", CiphertextFormat::Json);
    let mut doc: serde_json::Value = serde_json::from_slice(&sealed).expect("JSON");
    doc["extra"] = serde_json::json!("ignored");
    let text = serde_json::to_vec(&doc).expect("JSON");
    assert_eq!(&k.open(&text, b"").expect("opens")[..], b"hello");

    let open = |doc: serde_json::Value| k.open(&serde_json::to_vec(&doc).expect("JSON"), b"").map(|_| ());
    assert_eq!(open(serde_json::json!({})), Err(DecryptError::InvalidIvSize));
    let mut other_id = doc.clone();
    other_id["id"] = serde_json::json!("00");
    other_id["iv"] = serde_json::json!("");
    assert_eq!(
        open(other_id),
        Err(DecryptError::KeyIdMismatch),
        "the key ID comes first"
    );
    let mut bad_aead = doc.clone();
    bad_aead["aead"] = serde_json::json!("ROT13");
    bad_aead["nonce"] = serde_json::json!("");
    assert_eq!(
        open(bad_aead),
        Err(DecryptError::UnsupportedAlgorithm),
        "the algorithm before the nonce"
    );
    let mut short_nonce = doc.clone();
    short_nonce["nonce"] = serde_json::json!("AAAA");
    assert_eq!(open(short_nonce), Err(DecryptError::InvalidNonceSize));
    let mut not_b64 = doc;
    not_b64["bytes"] = serde_json::json!("***");
    assert_eq!(open(not_b64), Err(DecryptError::Malformed));
}

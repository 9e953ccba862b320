//! Vectors from kms-go and KES, plus Go `path.Match` behaviour.

use super::*;

fn prefix(allow: &[&str], deny: &[&str]) -> Policy {
    Policy::parse(allow, deny, PatternSyntax::Prefix).unwrap()
}

fn glob(allow: &[&str], deny: &[&str]) -> Policy {
    Policy::parse(allow, deny, PatternSyntax::Glob).unwrap()
}

/// kms-go `kes/policy_test.go`.
#[test]
fn kms_go_policy_vectors() {
    assert!(!Policy::default().allows("/v1/status"));
    let p = prefix(
        &["/v1/key/create/my*", "/v1/key/create/your*"],
        &["/v1/key/create/my-key*"],
    );
    assert!(!p.allows("/v1/key/create/my-key"));
    assert!(!p.allows("/v1/key/create/my-key1"));
    assert!(p.allows("/v1/key/create/my-minio-key"));
    assert!(p.allows("/v1/key/create/your-minio-key"));
    assert!(!p.allows("/v1/identity/list/somekey"));
}

#[test]
fn newest_prefix_semantics() {
    let p = prefix(&["/v1/key/create/*", "/v1/status", ""], &[]);
    assert!(p.allows("/v1/key/create/a"));
    assert!(p.allows("/v1/key/create/a/b"), "a trailing * crosses '/'");
    assert!(p.allows("/v1/status"));
    assert!(!p.allows("/v1/status/x"), "no star: exact match");
    assert!(!p.allows(""), "the empty pattern matches nothing");
    // A star in the middle is a literal (KES issue #510).
    let p = prefix(&["/v1/key/*/bucket1-key"], &[]);
    assert!(!p.allows("/v1/key/generate/bucket1-key"));
    assert!(p.allows("/v1/key/*/bucket1-key"));
}

#[test]
fn v016_glob_semantics() {
    let p = glob(&["/v1/key/*/my-key", "/v1/key/create/*"], &[]);
    assert!(p.allows("/v1/key/generate/my-key"));
    assert!(p.allows("/v1/key/create/anything"));
    assert!(!p.allows("/v1/key/create/a/b"), "* does not cross '/'");
    assert!(!p.allows("/v1/key/generate/other"));
    let p = glob(
        &["/v1/key/generate/app-?", "/v1/key/decrypt/[a-c]*", "/v1/key/list/\\*"],
        &[],
    );
    assert!(p.allows("/v1/key/generate/app-1"));
    assert!(!p.allows("/v1/key/generate/app-12"));
    assert!(p.allows("/v1/key/decrypt/b-key"));
    assert!(!p.allows("/v1/key/decrypt/d-key"));
    assert!(p.allows("/v1/key/list/*"));
    assert!(!p.allows("/v1/key/list/x"));
    let p = glob(&["/v1/key/*/[^x]*"], &["/v1/key/delete/*"]);
    assert!(p.allows("/v1/key/create/a"));
    assert!(!p.allows("/v1/key/create/xa"));
    assert!(!p.allows("/v1/key/delete/a"), "deny wins");
    // The MinIO guide's minio policy.
    let guide = glob(&["/v1/key/create/*", "/v1/key/generate/*", "/v1/key/decrypt/*"], &[]);
    assert!(guide.allows("/v1/key/create/minio-backend-default-key"));
    assert!(!guide.allows("/v1/key/delete/minio-backend-default-key"));
}

#[test]
fn malformed_globs_are_rejected() {
    for bad in ["[a-", "/v1/key/[", "/v1/key/\\", "[]a]", "[-]", "[x-]"] {
        assert!(Pattern::parse(bad, PatternSyntax::Glob).is_err(), "{bad}");
        assert!(Pattern::parse(bad, PatternSyntax::Prefix).is_ok(), "{bad}");
    }
    for ok in ["", "*", "/v1/*/*", "[a-z]", "[\\]]", "a\\*b"] {
        assert!(Pattern::parse(ok, PatternSyntax::Glob).is_ok(), "{ok}");
    }
}

/// §11.6: API key → identity.
#[test]
fn api_key_vectors() {
    for (key, identity) in [
        (
            "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw",
            "0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb",
        ),
        (
            "kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ",
            "ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7",
        ),
        (
            "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs",
            "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6",
        ),
        (
            "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc",
            "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22",
        ),
    ] {
        let parsed = ApiKey::parse(key).unwrap();
        assert_eq!(parsed.identity().as_str(), identity, "{key}");
        assert_eq!(parsed.to_text().as_str(), key, "re-serialises identically");
    }
    for bad in [
        "v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
        "kes:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
        "kes:v1:sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW",
        "kes:v1:",
        "kes:v1:AAAA",
    ] {
        assert!(ApiKey::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        ApiKey::parse("kes:v1:sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW").unwrap_err(),
        ApiKeyError::UnsupportedType(0xb1)
    );
    let shown = format!(
        "{:?}",
        ApiKey::parse("kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc").unwrap()
    );
    assert!(!shown.contains("AD9E7F"), "{shown}");
}

#[test]
fn identities() {
    assert!(Identity::parse("disabled").is_none());
    let id = Identity::parse("3ECFCDF38FCBE141AE26A1030F81E96B753365A46760AE6B578698A97C59FD22").unwrap();
    assert_eq!(
        id.as_str(),
        "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22"
    );
}

#[test]
fn authorizer() {
    let admin = Identity::parse(&"a".repeat(64)).unwrap();
    let app = Identity::parse(&"b".repeat(64)).unwrap();
    let stranger = Identity::parse(&"c".repeat(64)).unwrap();
    let mut auth = Authorizer::new(Some(admin.clone()));
    auth.add(
        "app",
        prefix(&["/v1/key/generate/app-*"], &[]),
        std::slice::from_ref(&app),
    )
    .unwrap();
    assert_eq!(auth.authorize(&admin, "/v1/key/delete/x"), Decision::Admin);
    assert_eq!(auth.authorize(&app, "/v1/key/generate/app-1"), Decision::Allowed);
    assert_eq!(auth.authorize(&app, "/v1/key/delete/app-1"), Decision::Denied);
    assert_eq!(auth.authorize(&stranger, "/v1/key/generate/app-1"), Decision::Denied);
    assert!(matches!(
        auth.add("other", Policy::default(), std::slice::from_ref(&app)),
        Err(AssignError::Duplicate { .. })
    ));
    assert!(matches!(
        auth.add("other", Policy::default(), &[admin]),
        Err(AssignError::Admin { .. })
    ));
    let err = auth.add("dup", Policy::default(), &[app]).unwrap_err().to_string();
    assert!(err.contains("identity already has a policy"), "{err}");
}

#[test]
fn the_identity_of_a_chain_is_its_first_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(vec!["ca".into()]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_identity = Identity::of_spki(&rcgen::PublicKeyData::subject_public_key_info(&ca_key));
    for alg in [
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let leaf = CertificateParams::new(vec!["client".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let expected = Identity::of_spki(&rcgen::PublicKeyData::subject_public_key_info(&key));
        for rule in [ChainRule::Newest, ChainRule::V016] {
            assert_eq!(identity_of_chain([leaf.der().as_ref()], rule), Ok(expected.clone()));
        }
        // CA certificates sent after the client's own are intermediates.
        assert_eq!(
            identity_of_chain([leaf.der().as_ref(), ca.der().as_ref()], ChainRule::Newest),
            Ok(expected.clone())
        );
        // v0.16.1 refused any second certificate.
        assert_eq!(
            identity_of_chain([leaf.der().as_ref(), ca.der().as_ref()], ChainRule::V016),
            Err(CertError::TooMany)
        );
        // The forged chain: a CA certificate whose key the client holds, then a copy
        // of somebody else's certificate. The copy never names the client.
        for rule in [ChainRule::Newest, ChainRule::V016] {
            assert_eq!(
                identity_of_chain([ca.der().as_ref(), leaf.der().as_ref()], rule),
                Err(CertError::TooMany)
            );
        }
    }
    let other = CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap();
    let leaf = CertificateParams::new(vec!["y".into()])
        .unwrap()
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap();
    assert_eq!(
        identity_of_chain([leaf.der().as_ref(), other.der().as_ref()], ChainRule::Newest),
        Err(CertError::TooMany)
    );
    // A lone CA:TRUE certificate (plain `openssl req -x509`) is the client's own.
    for rule in [ChainRule::Newest, ChainRule::V016] {
        assert_eq!(identity_of_chain([ca.der().as_ref()], rule), Ok(ca_identity.clone()));
        assert_eq!(identity_of_chain(std::iter::empty(), rule), Err(CertError::Missing));
        assert_eq!(identity_of_chain([&b"garbage"[..]], rule), Err(CertError::Invalid));
    }
    assert_eq!(
        identity_of_chain([leaf.der().as_ref(), &b"garbage"[..]], ChainRule::Newest),
        Err(CertError::Invalid)
    );
}

/// The playground API key's certificate (made as a KES client makes it) has the
/// same identity as the key.
#[test]
fn an_api_key_certificate_has_the_api_keys_identity() {
    let api = ApiKey::parse("kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc").unwrap();
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    pkcs8.extend_from_slice(api.expose_seed());
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let cert = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert_eq!(
        identity_of_chain([cert.der().as_ref()], ChainRule::Newest).unwrap(),
        api.identity()
    );
}

//! The MinIO guide's two examples and full files of both KES schemas parse to
//! exactly what they say; broken files get errors that name the file and the place.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyhost_config::{Config, ConfigError, KekSource, KeystoreConfig, Schema};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn parse(name: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let path = data(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned());
    Config::parse_with_env(&path, &text, &lookup)
}

fn inline(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with_env(Path::new("test.yaml"), text, &|_| None)
}

#[test]
fn the_guide_example_parses_with_its_aws_section_under_either_name() {
    let c = parse(
        "guide-kes-config.yaml",
        &[
            (
                "MINIO_IDENTITY_HASH",
                "ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7",
            ),
            ("AWSACCESSKEY", "AKIA"),
            ("AWSSECRETKEY", "s3cr3t"),
        ],
    )
    .unwrap();
    assert_eq!(c.schema, Schema::V016);
    assert_eq!(c.address.as_deref(), Some("0.0.0.0:7373"));
    assert_eq!(c.admin.as_deref(), Some("disabled"));
    assert_eq!(c.tls.key.as_deref(), Some(Path::new("/data/certs/server.key")));
    assert_eq!(c.policies.len(), 1);
    assert_eq!(c.policies[0].name, "minio");
    assert_eq!(
        c.policies[0].allow,
        ["/v1/key/create/*", "/v1/key/generate/*", "/v1/key/decrypt/*"]
    );
    assert_eq!(
        c.policies[0].identities,
        ["ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7"]
    );
    let KeystoreConfig::AwsSecretsManager(aws) = &c.keystore else {
        panic!("{:?}", c.keystore)
    };
    assert_eq!(aws.endpoint, "secretsmanager.REGION.amazonaws");
    assert_eq!(aws.region, "REGION");
    assert_eq!(aws.kms_key, None, "an empty kmskey means none");
    assert_eq!(aws.access_key.as_deref(), Some("AKIA"));
    assert_eq!(aws.secret_key.as_deref(), Some("s3cr3t"));
    assert!(!format!("{aws:?}").contains("s3cr3t"), "credentials never print");
}

#[test]
fn the_guide_reference_example_parses_and_lists_its_keys() {
    let c = parse(
        "guide-reference.yaml",
        &[(
            "MINIO_IDENTITY",
            "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6",
        )],
    )
    .unwrap();
    assert_eq!(c.schema, Schema::V016);
    // v0.16 expands an unset variable to the empty string.
    assert_eq!(c.admin, None);
    assert_eq!(
        c.keys,
        [
            "minio-encryption-key-alpha",
            "minio-encryption-key-baker",
            "minio-encryption-key-charlie"
        ]
    );
    assert_eq!(c.policies[0].name, "minio-server");
    assert!(matches!(c.keystore, KeystoreConfig::AwsSecretsManager(_)));
}

#[test]
fn a_full_v016_file() {
    let c = parse("v016-full.yaml", &[]).unwrap();
    assert_eq!(c.schema, Schema::V016);
    assert_eq!(
        c.admin.as_deref(),
        Some("3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22")
    );
    assert_eq!(c.tls.proxy_identities.len(), 1);
    assert_eq!(c.policies[0].deny, ["/v1/key/generate/my-app-internal*"]);
    assert_eq!(c.cache.any, Duration::from_secs(300));
    assert_eq!(c.cache.unused, Duration::from_secs(20));
    assert!(c.log.error && !c.log.audit);
    assert_eq!(c.keys, ["my-key"]);
    assert_eq!(c.keystore, KeystoreConfig::Fs { path: "./keys".into() });
}

#[test]
fn a_full_newest_file() {
    let c = parse("newest-full.yaml", &[("VAULT_TOKEN", "hvs.token")]).unwrap();
    assert_eq!(c.schema, Schema::Newest);
    assert_eq!(c.admin.as_deref(), Some("disabled"));
    assert!(c.tls.verify_clients);
    assert_eq!(c.tls.ca.as_deref(), Some(Path::new("./ca.pem")));
    assert_eq!(c.cache.offline, Duration::ZERO);
    assert!(c.api["/v1/ready"].skip_auth);
    assert_eq!(c.api["/v1/ready"].timeout, Some(Duration::from_secs(15)));
    assert!(!c.api["/v1/status"].skip_auth);
    assert_eq!(c.keys, ["my-key", "my-key-2"]);
    let KeystoreConfig::Plugin(p) = &c.keystore else {
        panic!()
    };
    assert_eq!(p.path, "./plugins/my-store.wasm");
    assert_eq!(p.config["token"], "hvs.token");
    assert_eq!(p.allow_http, ["https://vault.internal:8200"]);
    assert_eq!(p.allow_dir.as_deref(), Some(Path::new("./keys")));
    assert_eq!(
        p.allow_tls,
        [keyhost_config::OriginTlsConfig {
            origins: vec!["https://vault.internal:8200".into()],
            ca: Some("./vault-ca.pem".into()),
            client: Some(("./keyhost-client.pem".into(), "./keyhost-client.key".into())),
        }]
    );
    assert_eq!(p.memory.as_deref(), Some("64MiB"));
    assert_eq!(p.timeout, Some(Duration::from_secs(10)));
    assert_eq!(p.instances, Some(4));
    assert!(!format!("{p:?}").contains("hvs.token"));
}

#[test]
fn defaults() {
    let c = inline("admin: { identity: disabled }").unwrap();
    assert_eq!(c.keystore, KeystoreConfig::Memory);
    assert_eq!(c.cache.any, Duration::from_secs(300));
    assert_eq!(
        c.cache.unused,
        Duration::from_secs(30),
        "the intended default, not KES's typo"
    );
    assert!(c.log.error && !c.log.audit);
}

/// Each broken file, the place its error must name, and words it must contain.
/// `log.audit`: KES's switches and levels, and keyhost's `required`.
#[test]
fn audit_switches() {
    for (value, audit, required) in [
        ("on", true, false),
        ("off", false, false),
        ("INFO", true, false),
        ("required", true, true),
    ] {
        let c = inline(&format!(
            "version: v1\nadmin: {{identity: x}}\nlog: {{audit: {value}}}\n"
        ))
        .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!((c.log.audit, c.log.audit_required), (audit, required), "{value}");
    }
}

#[test]
fn broken_files_get_errors_that_say_where_and_what() {
    let plugin = |tls: &str| {
        format!(
            "admin: {{identity: x}}\nkeystore: {{plugin: {{path: p.wasm, allow: {{http: [\"https://e:2379\"], tls: [{tls}]}}}}}}\n"
        )
    };
    let tls_cases = [
        (
            plugin("{ca: ca.pem}"),
            "keystore.plugin.allow.tls[0].origins",
            "missing",
        ),
        (
            plugin("{origins: [\"https://e:2379\"]}"),
            "keystore.plugin.allow.tls[0].ca",
            "name a `ca`",
        ),
        (
            plugin("{origins: [\"https://e:2379\"], cert: c.pem}"),
            "keystore.plugin.allow.tls[0].key",
            "needs the file of its private key",
        ),
        (
            plugin("{origins: [\"https://e:2379\"], key: c.key}"),
            "keystore.plugin.allow.tls[0].cert",
            "needs the file of its certificate",
        ),
        (plugin("{origins: [\"https://e:2379\"], crt: c.pem}"), "line 2", "crt"),
    ];
    for (text, at, what) in &tls_cases {
        let err = inline(text).unwrap_err().to_string();
        assert!(err.contains(at) && err.contains(what), "{text}: {err}");
    }
    let cases: &[(&str, &str, &str)] = &[
        ("admin: {identity: x}\ntls: {key: a, cret: b}\n", "line 2", "cret"),
        ("version: v2\n", "version", "only version is v1"),
        (
            "admin: {identity: x}\ncache: {expiry: {any: 5 minutes}}\n",
            "cache.expiry.any",
            "not a duration",
        ),
        (
            "admin: {identity: x}\ncache: {expiry: {any: -1s}}\n",
            "cache.expiry.any",
            "negative",
        ),
        (
            "admin: {identity: x}\ntls: {key: \"${NOPE}\"}\n",
            "tls.key",
            "'NOPE', which is not set",
        ),
        (
            "admin: {identity: x}\ntls: {auth: maybe}\n",
            "tls.auth",
            "not on or off",
        ),
        (
            "version: v1\nadmin: {identity: x}\nlog: {audit: requird}\n",
            "log.audit",
            "not on, off or required",
        ),
        (
            "admin: {identity: x}\npolicy: {\"bad name!\": {allow: []}}\n",
            "policy.bad name!",
            "policy name",
        ),
        // A leading dot is refused as the API refuses it: such a name could never
        // be created, read or stored in a keystore.
        (
            "admin: {identity: x}\npolicy: {\".hidden\": {allow: []}}\n",
            "policy..hidden",
            "neither starts with - or .",
        ),
        (
            "admin: {identity: x}\nkeys:\n  - name: .hidden\n",
            "keys[0].name",
            "'.hidden' is not a valid key name",
        ),
        (
            "admin: {identity: x}\npolicy:\n  a: {identities: [abc]}\n  b: {identities: [abc]}\n",
            "policy.b.identities",
            "identity already has a policy",
        ),
        (
            "admin: {identity: abc}\npolicy: {a: {identities: [abc]}}\n",
            "policy.a.identities",
            "admin identity",
        ),
        (
            "admin: {identity: x}\nkeys: [{name: a}, {name: a}]\n",
            "keys[1].name",
            "listed twice",
        ),
        (
            "admin: {identity: x}\nkeystore: {vault: {endpoint: x}}\n",
            "keystore.vault",
            "no keyhost plugin yet",
        ),
        (
            "admin: {identity: x}\nkeystore: {fs: {path: a}, plugin: {path: b}}\n",
            "keystore",
            "exactly one",
        ),
        (
            "admin: {identity: x}\nkeystore: {secretsmanager: {region: r}}\n",
            "keystore.secretsmanager.endpoint",
            "missing",
        ),
        (
            "admin: {identity: x}\nkeystore: {plugin: {path: p, limits: {instances: 0}}}\n",
            "keystore.plugin.limits.instances",
            "positive",
        ),
        ("root: x\nadmin: {identity: y}\n", "root", "keep one"),
        ("admin: [\n", "line", ""),
        (
            "admin: {identity: x}\napi: {v1/status: {}}\n",
            "api.v1/status",
            "starts with /",
        ),
        (
            "admin: {identity: x}\nkeystore: {fs: {path: k}, seal: {keys: []}}\n",
            "keystore.seal.keys",
            "at least one key-encryption key",
        ),
        (
            "admin: {identity: x}\nkeystore: {fs: {path: k}, seal: {keys: [{id: a, file: f, env: E}]}}\n",
            "keystore.seal.keys[0]",
            "not several",
        ),
        (
            "admin: {identity: x}\nkeystore: {fs: {path: k}, seal: {keys: [{id: a}]}}\n",
            "keystore.seal.keys[0]",
            "no source of the key",
        ),
        (
            "admin: {identity: x}\nkeystore: {fs: {path: k}, seal: {keys: [{id: a, env: \"${KEK}\"}]}}\n",
            "keystore.seal.keys[0].env",
            "not the name of an environment variable",
        ),
        (
            "admin: {identity: x}\nkeystore: {fs: {path: k}, seal: {keys: [{id: a, aws_kms: {region: r}}]}}\n",
            "keystore.seal.keys[0].aws_kms.ciphertext",
            "missing",
        ),
        (
            "admin: {identity: x}\nkeystore: {fs: {path: k}, seal: {keys: [{id: a, file: f}], unsealed: maybe}}\n",
            "keystore.seal.unsealed",
            "not serve or refuse",
        ),
        (
            "admin: {identity: x}\nkeystore: {seal: {keys: [{id: a, file: f}]}}\n",
            "keystore.seal",
            "needs a keystore",
        ),
    ];
    for (text, at, words) in cases {
        let err = inline(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("test.yaml: "), "{text:?}: {shown}");
        assert!(shown.contains(at), "{text:?}: expected {at:?} in: {shown}");
        assert!(shown.contains(words), "{text:?}: expected {words:?} in: {shown}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let err = Config::load(Path::new("/nonexistent/kes.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/nonexistent/kes.yaml: cannot read"), "{err}");
}

#[test]
fn connection_limits_and_their_errors() {
    let c = inline(
        "version: v1\nadmin:\n  identity: disabled\nconnections:\n  max: 512\n  handshakes_per_ip: 32\n  handshake_timeout: 3s\n  header_timeout: 2s\n  body_timeout: 4s\n  idle_timeout: 1m\n",
    )
    .unwrap();
    assert_eq!(c.connections.max, Some(512));
    assert_eq!(c.connections.handshakes_per_ip, Some(32));
    assert_eq!(c.connections.handshake_timeout, Some(Duration::from_secs(3)));
    assert_eq!(c.connections.header_timeout, Some(Duration::from_secs(2)));
    assert_eq!(c.connections.body_timeout, Some(Duration::from_secs(4)));
    assert_eq!(c.connections.idle_timeout, Some(Duration::from_secs(60)));
    let defaults = inline("version: v1\nadmin:\n  identity: disabled\n").unwrap();
    assert_eq!(defaults.connections, keyhost_config::ConnectionLimits::default());
    let shares = inline(
        "version: v1\nadmin:\n  identity: disabled\nconnections:\n  per_address: 8\n  per_identity: 9\n  unknown: 10\n  handshakes: 11\n  handshakes_per_network: 12\n  requests_per_identity: 13\n  admin_networks: [10.0.9.0/24, \"fd00::/64\", 192.0.2.7]\n",
    )
    .unwrap()
    .connections;
    assert_eq!(
        (
            shares.per_address,
            shares.per_identity,
            shares.unknown,
            shares.handshakes,
            shares.handshakes_per_network,
            shares.requests_per_identity
        ),
        (Some(8), Some(9), Some(10), Some(11), Some(12), Some(13))
    );
    assert_eq!(shares.admin_networks, ["10.0.9.0/24", "fd00::/64", "192.0.2.7"]);
    for (text, words) in [
        (
            "connections:\n  max: 0\n",
            "connections.max: '0' is not a positive number",
        ),
        (
            "connections:\n  max: many\n",
            "connections.max: 'many' is not a positive number",
        ),
        (
            "connections:\n  idle_timeout: 0s\n",
            "connections.idle_timeout: a timeout of 0",
        ),
        ("connections:\n  maximum: 5\n", "unknown field `maximum`"),
        (
            "connections:\n  per_address: -1\n",
            "connections.per_address: '-1' is not a positive number",
        ),
        (
            "connections:\n  admin_networks: [10.0.0.0/8, 10.0.0.0/33]\n",
            "connections.admin_networks[1]: '10.0.0.0/33' is not a network; write ADDR/BITS",
        ),
        (
            "connections:\n  admin_networks: [office]\n",
            "connections.admin_networks[0]: 'office' is not a network",
        ),
    ] {
        let err = inline(&format!("version: v1\nadmin:\n  identity: disabled\n{text}")).unwrap_err();
        assert!(err.to_string().contains(words), "{text:?}: {err}");
    }
}

/// A v0.16 file keeps KES v0.16's formats (JSON ciphertexts, `{"bytes"}` records)
/// unless `compat:` says otherwise, so that a fleet can go back to KES v0.16.1 with
/// every key and ciphertext; a newest file writes the newest formats.
#[test]
fn each_schema_writes_its_own_eras_formats_by_default() {
    let v016 = inline("root: disabled\ntls: {key: k, cert: c}\n").unwrap();
    assert_eq!(v016.schema, Schema::V016);
    assert!(v016.compat.json_ciphertexts && v016.compat.v016_records);
    let v016_current =
        inline("root: disabled\ntls: {key: k, cert: c}\ncompat: {ciphertext: raw, key_format: current}\n").unwrap();
    assert!(!v016_current.compat.json_ciphertexts && !v016_current.compat.v016_records);
    let newest =
        inline("admin: {identity: disabled}\ntls: {key: k, cert: c}\nkeystore: {fs: {path: /tmp/k}}\n").unwrap();
    assert_eq!(newest.schema, Schema::Newest);
    assert!(!newest.compat.json_ciphertexts && !newest.compat.v016_records);
}

#[test]
fn sealing_is_read_with_every_source_and_the_unsealed_switch() {
    let config = inline(
        "admin: {identity: x}\nkeystore:\n  fs: {path: k}\n  seal:\n    unsealed: refuse\n    keys:\n\
         \x20     - {id: 0123456789abcdef, file: /etc/kek}\n\
         \x20     - {id: fedcba9876543210, env: OLD_KEK}\n\
         \x20     - id: 00112233aabbccdd\n        aws_kms: {ciphertext: AQID, key: alias/k, region: eu-west-1, credentials: {accesskey: A, secretkey: S3CR3T}}\n",
    )
    .unwrap();
    let seal = config.seal.unwrap();
    assert!(seal.refuse_unsealed);
    let sources: Vec<_> = seal
        .keys
        .iter()
        .map(|k| (k.field.as_str(), k.id.as_deref(), &k.source))
        .collect();
    assert_eq!(
        sources[0],
        (
            "keystore.seal.keys[0]",
            Some("0123456789abcdef"),
            &KekSource::File("/etc/kek".into())
        )
    );
    assert_eq!(
        sources[1],
        (
            "keystore.seal.keys[1]",
            Some("fedcba9876543210"),
            &KekSource::Env("OLD_KEK".into())
        )
    );
    match sources[2].2 {
        KekSource::AwsKms(kms) => {
            assert_eq!(
                (kms.ciphertext.as_str(), kms.key.as_deref(), kms.region.as_str()),
                ("AQID", Some("alias/k"), "eu-west-1")
            );
            assert_eq!(
                (kms.access_key.as_deref(), kms.secret_key.as_deref()),
                (Some("A"), Some("S3CR3T"))
            );
            // The credentials are not shown.
            assert!(!format!("{kms:?}").contains("S3CR3T"), "{kms:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        inline("admin: {identity: x}\nkeystore: {fs: {path: k}}\n")
            .unwrap()
            .seal,
        None
    );
}

//! The server on the bundled etcd plugin, configured as an operator would: a TLS
//! etcd cluster that requires client certificates, reached with the CA and client
//! certificate named under `keystore.plugin.allow.tls`.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use keyhost_test_support::etcd::EtcdCluster;
use keyhost_test_support::process::{curl, newest_config, server_files, start, write_identity};

/// The `keystore` section for `cluster`, with `tls_origins` under `allow.tls`.
fn keystore(dir: &std::path::Path, cluster: &EtcdCluster, tls_origins: &[String]) -> String {
    let pki = cluster.tls().unwrap();
    std::fs::write(dir.join("etcd-ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("etcd-client.pem"), &pki.client_cert_pem).unwrap();
    keyhost_test_support::write_private(dir.join("etcd-client.key"), &pki.client_key_pem);
    let endpoints = cluster.endpoints();
    let quoted = |list: &[String]| list.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "keystore:\n  plugin:\n    path: builtin:etcd\n    config:\n      endpoints: {}\n      prefix: prod/keys/\n    \
         allow:\n      http: [{}]\n      tls:\n        - origins: [{}]\n          ca: {d}/etcd-ca.pem\n          \
         cert: {d}/etcd-client.pem\n          key: {d}/etcd-client.key\n",
        endpoints.join(","),
        quoted(&endpoints),
        quoted(tls_origins),
        d = dir.display()
    )
}

#[test]
fn keys_live_in_a_tls_etcd_cluster_reached_with_a_client_certificate() {
    let cluster = EtcdCluster::start_tls(3);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = server_files(d);
    write_identity(d, "admin", &creds.admin);
    let config = newest_config(d, &creds, &keystore(d, &cluster, &cluster.endpoints()));
    let server = start(&config, &[]).unwrap();
    let (status, body) = curl(d, "admin", &format!("-X POST {}/v1/key/create/etcd-key", server.url));
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(
        d,
        "admin",
        &format!("-X POST {}/v1/key/generate/etcd-key -d '{{}}'", server.url),
    );
    assert_eq!(status, 200, "{body}");
    // The record is in etcd, under the configured prefix.
    let key = base64_of("prod/keys/etcd-key");
    let stored = cluster.request("/v3/kv/range", &format!(r#"{{"key":"{key}","keys_only":true}}"#));
    assert!(stored.contains(&key), "{stored}");
    let (status, body) = curl(d, "admin", &format!("{}/v1/status", server.url));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tls_settings_for_an_origin_that_is_not_granted_stop_the_server_and_name_the_field() {
    let cluster = EtcdCluster::start_tls(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = server_files(d);
    write_identity(d, "admin", &creds.admin);
    let config = newest_config(d, &creds, &keystore(d, &cluster, &["https://127.0.0.1:1".to_owned()]));
    let err = start(&config, &[]).unwrap_err();
    assert!(
        err.contains("keystore.plugin.allow.tls[0].origins") && err.contains("is not granted"),
        "{err}"
    );
}

#[test]
fn an_origin_listed_twice_or_a_missing_file_under_allow_tls_stops_the_server_and_names_the_entry() {
    let cluster = EtcdCluster::start_tls(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = server_files(d);
    write_identity(d, "admin", &creds.admin);
    let first = cluster.endpoints()[0].clone();
    let twice = format!(
        "{}        - origins: [\"{first}\"]\n          ca: {}/etcd-ca.pem\n",
        keystore(d, &cluster, &cluster.endpoints()),
        d.display()
    );
    let err = start(&newest_config(d, &creds, &twice), &[]).unwrap_err();
    assert!(
        err.contains("keystore.plugin.allow.tls[1].origins") && err.contains("listed under allow.tls[0] too"),
        "{err}"
    );
    let missing = keystore(d, &cluster, &cluster.endpoints()).replace("etcd-ca.pem", "no-such-ca.pem");
    let err = start(&newest_config(d, &creds, &missing), &[]).unwrap_err();
    assert!(
        err.contains("keystore.plugin.allow.tls[0].ca: cannot read") && err.contains("no-such-ca.pem"),
        "{err}"
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

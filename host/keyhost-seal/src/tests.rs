use std::path::PathBuf;
use std::sync::Arc;

use keyhost_config::{KekConfig, KekSource, SealConfig};
use keyhost_keystore::{Error, Keystore, MAX_RECORD_LEN, MemStore};

use super::*;

fn kek(byte: u8) -> Kek {
    Kek::new(&[byte; KEK_LEN])
}

fn sealer(bytes: &[u8]) -> Sealer {
    Sealer::new(bytes.iter().map(|b| kek(*b)).collect()).unwrap()
}

#[test]
fn a_record_opens_under_its_name_and_no_other() {
    let s = sealer(&[1]);
    let record = br#"{"bytes":"AAAA","algorithm":"AES256"}"#;
    let sealed = s.seal("my-key", record);
    assert!(sealed.starts_with(format!("{PREFIX}{}:", s.current()).as_bytes()));
    assert_eq!(&**s.open("my-key", &sealed).unwrap(), record);
    assert_eq!(s.open("my-kez", &sealed), Err(SealError::OtherName));
    assert_eq!(s.open("", &sealed), Err(SealError::OtherName));
    // Two seals of one record differ (a nonce per record).
    assert_ne!(s.seal("my-key", record), sealed);
}

#[test]
fn the_id_is_a_fingerprint_of_the_key() {
    // A fixed vector, so that a change of the derivation, which would orphan every
    // record sealed so far, fails here.
    assert_eq!(kek(0).id(), "6d81500d661a421b");
    assert_eq!(kek(0).id(), kek(0).id());
    assert_ne!(kek(0).id(), kek(1).id());
    assert_eq!(kek(0).id().len(), 16);
}

#[test]
fn every_listed_kek_opens_and_the_first_seals() {
    let old = sealer(&[1]);
    let sealed_old = old.seal("k", b"v");
    let both = sealer(&[2, 1]);
    assert_eq!(both.current(), kek(2).id());
    assert_eq!(&**both.open("k", &sealed_old).unwrap(), b"v");
    assert_eq!(
        Sealer::inspect(&both.seal("k", b"v")),
        Sealing::Sealed(kek(2).id().to_owned())
    );
    let new_only = sealer(&[2]);
    assert_eq!(
        new_only.open("k", &sealed_old),
        Err(SealError::UnknownKek(kek(1).id().to_owned()))
    );
    let message = SealError::UnknownKek(kek(1).id().to_owned()).to_string();
    assert!(message.contains(kek(1).id()), "{message}");
}

#[test]
fn a_kek_listed_twice_is_refused() {
    let e = Sealer::new(vec![kek(1), kek(2), kek(1)]).unwrap_err();
    assert!(e.contains("keys[0] and keys[2]"), "{e}");
    assert!(Sealer::new(vec![]).is_err());
}

#[test]
fn altered_records_do_not_open() {
    let s = sealer(&[1]);
    let sealed = s.seal("k", b"a record of some length");
    let header = PREFIX.len() + 17;
    for at in [header, header + 8, header + 20, sealed.len() - 2] {
        let mut bad = sealed.clone();
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        assert!(s.open("k", &bad).is_err(), "byte {at}");
    }
    let cut = &sealed[..sealed.len() - 8];
    assert!(s.open("k", cut).is_err());
    assert_eq!(
        s.open("k", format!("{PREFIX}{}:!!!", s.current()).as_bytes()),
        Err(SealError::Corrupt("the body is not base64"))
    );
    assert!(s.open("k", PREFIX.as_bytes()).is_err());
    // An id that is not one: refused as corrupt, never echoed.
    let bad = String::from_utf8(sealed.clone())
        .unwrap()
        .replacen(s.current(), "ZZZZ\u{1b}[31mZZZZZZ", 1);
    assert_eq!(
        s.open("k", bad.as_bytes()),
        Err(SealError::Corrupt("no key-encryption key id after the prefix"))
    );
    assert_eq!(Sealer::inspect(bad.as_bytes()), Sealing::Malformed);
}

#[test]
fn any_version_of_the_prefix_is_sealed_never_plain() {
    let s = sealer(&[1]);
    for record in [
        &b"keyhost-sealed:v2:0123456789abcdef:AAAA"[..],
        b"keyhost-sealed:",
        b"keyhost-sealed:v1:",
    ] {
        assert_eq!(Sealer::inspect(record), Sealing::Malformed, "{record:?}");
        assert!(matches!(s.open("k", record), Err(SealError::Corrupt(_))), "{record:?}");
    }
}

#[test]
fn kes_records_are_plain() {
    for record in [
        &br#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E="}"#[..],
        b"CiAn",
        b"",
        b"keyhost-sealed",
        b" keyhost-sealed:v1:",
    ] {
        assert_eq!(Sealer::inspect(record), Sealing::Plain);
    }
}

#[test]
fn the_sizes_agree_with_sealing() {
    let s = sealer(&[1]);
    for len in [0, 1, 2, 3, 100, 4095, 65536] {
        assert_eq!(s.seal("k", &vec![7; len]).len(), Sealer::sealed_len(len), "{len}");
    }
    let max = Sealer::max_plain(MAX_RECORD_LEN);
    assert!(Sealer::sealed_len(max) <= MAX_RECORD_LEN);
    assert!(Sealer::sealed_len(max + 1) > MAX_RECORD_LEN);
}

#[tokio::test]
async fn the_store_underneath_holds_only_sealed_records() {
    let inner = Arc::new(MemStore::new());
    let store = SealedStore::new(inner.clone(), Some(Arc::new(sealer(&[3]))));
    let secret = b"0123456789abcdef0123456789abcdef";
    store.create("a", secret).await.unwrap();
    let raw = inner.get("a").await.unwrap();
    assert!(raw.starts_with(PREFIX.as_bytes()));
    assert!(!raw.windows(8).any(|w| secret.windows(8).any(|s| s == w)));
    assert_eq!(&**store.get("a").await.unwrap(), secret);
    // A record written before sealing was switched on is served as it is.
    inner.create("old", b"{\"bytes\":\"x\"}").await.unwrap();
    assert_eq!(&**store.get("old").await.unwrap(), b"{\"bytes\":\"x\"}");
    // Moved to another name in the backend: a clear error, not the key.
    inner.create("b", &raw).await.unwrap();
    match store.get("b").await {
        Err(Error::Other(m)) => assert!(m.contains("'b'") && m.contains("another key name"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get("missing").await, Err(Error::NotFound));
    assert_eq!(store.create("a", b"x").await, Err(Error::AlreadyExists));
    let too_big = vec![0; Sealer::max_plain(MAX_RECORD_LEN) + 1];
    assert!(matches!(
        store.create("big", &too_big).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.get("big").await, Err(Error::NotFound));
    // Refusing unsealed records: a record planted in the clear is not served.
    let strict = SealedStore::new(inner.clone(), Some(Arc::new(sealer(&[3])))).with_unsealed(Unsealed::Refuse);
    match strict.get("old").await {
        Err(Error::Other(m)) => assert!(m.contains("'old'") && m.contains("is not sealed"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(&**strict.get("a").await.unwrap(), secret);
    // With sealing off, a sealed record is refused, saying why.
    let off = SealedStore::new(inner.clone(), None);
    match off.get("a").await {
        Err(Error::Other(m)) => assert!(
            m.contains("keystore.seal is not configured") && m.contains(kek(3).id()),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    off.create("plain", b"p").await.unwrap();
    assert_eq!(&**inner.get("plain").await.unwrap(), b"p");
}

fn config(entries: Vec<(Option<&str>, KekSource)>) -> SealConfig {
    SealConfig {
        refuse_unsealed: false,
        keys: entries
            .into_iter()
            .enumerate()
            .map(|(i, (id, source))| KekConfig {
                field: format!("keystore.seal.keys[{i}]"),
                id: id.map(str::to_owned),
                source,
            })
            .collect(),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn write_key(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test]
async fn key_files_are_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (kek, bytes) = Kek::generate();
    let text = format!("{}\n", STANDARD.encode(*bytes));
    let good = write_key(dir.path(), "good", &text, 0o600);
    let id = kek.id().to_owned();
    let load = |entries| async move { kek::load(&config(entries), "c.yaml", &no_env).await };

    let sealer = load(vec![(Some(&*id), KekSource::File(good.clone()))]).await.unwrap();
    assert_eq!(sealer.current(), id);

    let open = write_key(dir.path(), "open", &text, 0o640);
    let e = load(vec![(Some(&*id), KekSource::File(open.clone()))])
        .await
        .unwrap_err();
    assert!(e.starts_with("c.yaml: keystore.seal.keys[0].file: "), "{e}");
    assert!(
        e.contains("mode 0640") && e.contains(&format!("chmod 600 {}", open.display())),
        "{e}"
    );

    let e = load(vec![(Some(&*id), KekSource::File(dir.path().join("absent")))])
        .await
        .unwrap_err();
    assert!(e.contains("keys[0].file: cannot read") && e.contains("absent"), "{e}");

    let short = write_key(dir.path(), "short", &STANDARD.encode([1u8; 16]), 0o600);
    let e = load(vec![(Some(&*id), KekSource::File(short))]).await.unwrap_err();
    assert!(e.contains("does not hold a key-encryption key"), "{e}");

    // The right file format, the wrong key: refused, naming both ids.
    let other = write_key(dir.path(), "other", &STANDARD.encode([9u8; 32]), 0o600);
    let e = load(vec![
        (Some(&*id), KekSource::File(good.clone())),
        (Some(&*id), KekSource::File(other)),
    ])
    .await
    .unwrap_err();
    assert!(e.starts_with("c.yaml: keystore.seal.keys[1]: "), "{e}");
    assert!(
        e.contains(&format!("not the key-encryption key {id}")) && e.contains(Kek::new(&[9; 32]).id()),
        "{e}"
    );

    let big = write_key(dir.path(), "big", &"A".repeat(2000), 0o600);
    let e = load(vec![(Some(&*id), KekSource::File(big))]).await.unwrap_err();
    assert!(e.contains("has 2000 bytes"), "{e}");
    let e = load(vec![(Some(&*id), KekSource::File(dir.path().to_owned()))])
        .await
        .unwrap_err();
    assert!(e.contains("is not a regular file"), "{e}");

    // A file of another user's is refused (playable where the test may chown).
    if rustix::process::geteuid().is_root() {
        let theirs = write_key(dir.path(), "theirs", &text, 0o600);
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let e = load(vec![(Some(&*id), KekSource::File(theirs))]).await.unwrap_err();
        assert!(e.contains("belongs to user 65534"), "{e}");
    }

    let e = load(vec![(None, KekSource::File(good))]).await.unwrap_err();
    assert!(
        e.contains("keys[0].id: missing") && e.contains(&format!("`id: {id}`")),
        "{e}"
    );
}

#[tokio::test]
async fn environment_variables_are_checked_at_start_up() {
    let id = kek(5).id().to_owned();
    let value = STANDARD.encode([5u8; 32]);
    let env = |name: &str| match name {
        "GOOD" => Some(value.clone()),
        "BAD" => Some("not base64".to_owned()),
        _ => None,
    };
    let cfg = |var: &str| config(vec![(Some(&*id), KekSource::Env(var.to_owned()))]);
    assert_eq!(kek::load(&cfg("GOOD"), "c.yaml", &env).await.unwrap().current(), id);
    let e = kek::load(&cfg("UNSET"), "c.yaml", &env).await.unwrap_err();
    assert!(
        e.contains("keys[0].env: the environment variable UNSET is not set"),
        "{e}"
    );
    let e = kek::load(&cfg("BAD"), "c.yaml", &env).await.unwrap_err();
    assert!(e.contains("BAD does not hold the base64 of 32 bytes"), "{e}");
    assert!(!e.contains("not base64"), "the value must not be echoed: {e}");
}

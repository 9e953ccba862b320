//! Plugin costs, measured against baselines built in the same run:
//!
//! - loading the fs plugin: cold compile vs precompiled artifact from the disk cache;
//! - one `get` through the fs plugin vs the native in-memory store vs a plain
//!   `std::fs::read` of the same file (what the plugin does, without the sandbox);
//! - one `get` on a fresh instance (instantiation + open + get);
//! - host-side sealing (`keystore.seal`) on a cache miss: a `get` through the fs
//!   plugin of a sealed record, opened by the host, vs the same `get` unsealed; and
//!   sealing and opening alone;
//! - instance checkout: a call that does no I/O, on a warm and on a fresh instance.
//!
//! Run with `cargo bench -p keyhost-plugin-host --bench plugin` (release build).
//! `KEYHOST_BENCH_ITERS` sets the number of timed calls (default 20000).

#![expect(clippy::unwrap_used, reason = "Tests and benchmarks fail loudly by design")]

use keyhost_bench::{header, iterations, loads, median, print_load, time_calls};
use keyhost_keystore::{Keystore, MemStore};
use keyhost_plugin_host::{Grants, PluginSource, PluginSpec, Runtime, RuntimeOptions};

fn main() {
    let iters = iterations(20_000);
    let wasm = keyhost_plugin_build::build(&["keyhost-plugin-fs"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let spec = {
            let mut spec = PluginSpec::new("fs", PluginSource::File(wasm.clone()));
            spec.grants = Grants {
                http: vec![],
                dir: Some(data.path().to_owned()),
                ..Grants::default()
            };
            spec
        };
        let options = |cached: bool| RuntimeOptions {
            cache_dir: cached.then(|| cache.path().join("artifacts")),
            ..RuntimeOptions::default()
        };

        // Load times: the median of `loads()` fresh runtimes each.
        let cold = median(loads(), || async {
            Runtime::new(options(false)).unwrap().load(spec.clone()).await.unwrap();
        })
        .await;
        Runtime::new(options(true)).unwrap().load(spec.clone()).await.unwrap();
        let cached = median(loads(), || async {
            Runtime::new(options(true)).unwrap().load(spec.clone()).await.unwrap();
        })
        .await;
        print_load(&format!("fs plugin: {}", wasm.display()), size, loads(), cold, cached);

        let plugin = Runtime::new(options(true)).unwrap().load(spec.clone()).await.unwrap();
        let record = vec![7u8; 180]; // the size of a KES key record
        plugin.create("bench-key", &record).await.unwrap();
        let sealer = std::sync::Arc::new(keyhost_seal::Sealer::new(vec![keyhost_seal::Kek::generate().0]).unwrap());
        let sealed = keyhost_seal::SealedStore::new(std::sync::Arc::new(plugin.clone()), Some(sealer.clone()));
        sealed.create("bench-sealed", &record).await.unwrap();
        let sealed_record = sealer.seal("bench-sealed", &record);
        let mem = MemStore::new();
        mem.create("bench-key", &record).await.unwrap();
        let file = data.path().join("bench-key");

        let native = time_calls("native in-memory store get", iters, || async {
            std::hint::black_box(mem.get("bench-key").await.unwrap());
        })
        .await;
        let read = time_calls("std::fs::read of the same file", iters, || async {
            std::hint::black_box(std::fs::read(&file).unwrap());
        })
        .await;
        let via_plugin = time_calls("fs plugin get (warm instance)", iters, || async {
            std::hint::black_box(plugin.get("bench-key").await.unwrap());
        })
        .await;
        let fresh = time_calls("fs plugin get (fresh instance each)", (iters / 20).max(50), || async {
            plugin.recycle();
            std::hint::black_box(plugin.get("bench-key").await.unwrap());
        })
        .await;
        // A name the store refuses before any file-system call: instance checkout,
        // the call into the sandbox and back, and the error's conversion.
        let checkout = time_calls("fs plugin call without I/O (warm)", iters, || async {
            std::hint::black_box(plugin.get("no/such/name").await.unwrap_err());
        })
        .await;
        let instantiate = time_calls(
            "fs plugin call without I/O (fresh instance)",
            (iters / 20).max(50),
            || async {
                plugin.recycle();
                std::hint::black_box(plugin.get("no/such/name").await.unwrap_err());
            },
        )
        .await;

        println!();
        println!("get of a 180-byte record, {iters} calls, one at a time (µs):");
        println!("{}", header("vs native"));
        for sample in [&native, &read, &via_plugin, &fresh, &checkout, &instantiate] {
            println!("{}", sample.row(Some(&native)));
        }
        println!();
        println!(
            "plugin overhead over the native store: {:.1} µs per get; over a plain file read: {:.1} µs",
            (via_plugin.mean().as_secs_f64() - native.mean().as_secs_f64()) * 1e6,
            (via_plugin.mean().as_secs_f64() - read.mean().as_secs_f64()) * 1e6
        );
        println!(
            "instantiation (fresh instance, open, recycle): {:.1} µs; checkout and call without I/O: {:.1} µs",
            (instantiate.mean().as_secs_f64() - checkout.mean().as_secs_f64()) * 1e6,
            checkout.mean().as_secs_f64() * 1e6
        );

        // Sealing: what a cache miss costs more with keystore.seal. (A cached key
        // does not reach the keystore, sealed or not.)
        let unsealed = time_calls("fs plugin get, unsealed record", iters, || async {
            std::hint::black_box(plugin.get("bench-key").await.unwrap());
        })
        .await;
        let opened = time_calls("fs plugin get, sealed record opened", iters, || async {
            std::hint::black_box(sealed.get("bench-sealed").await.unwrap());
        })
        .await;
        let open_alone = time_calls("open a sealed record (no plugin)", iters, || async {
            std::hint::black_box(sealer.open("bench-sealed", &sealed_record).unwrap());
        })
        .await;
        let seal_alone = time_calls("seal a record (no plugin)", iters, || async {
            std::hint::black_box(sealer.seal("bench-sealed", &record));
        })
        .await;
        println!();
        println!("host-side sealing of a 180-byte record on a cache miss, {iters} calls (µs):");
        println!("{}", header("vs unsealed"));
        for sample in [&unsealed, &opened, &open_alone, &seal_alone] {
            println!("{}", sample.row(Some(&unsealed)));
        }
        println!();
        println!(
            "sealing adds {:.1} µs to a cache miss ({:+.1}%); sealing a new key's record costs {:.1} µs",
            (opened.mean().as_secs_f64() - unsealed.mean().as_secs_f64()) * 1e6,
            (opened.mean().as_secs_f64() / unsealed.mean().as_secs_f64() - 1.0) * 100.0,
            seal_alone.mean().as_secs_f64() * 1e6
        );
    });
}

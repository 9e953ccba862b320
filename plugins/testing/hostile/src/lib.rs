//! A hostile plugin for the sandbox tests. `get(name)` performs the action that
//! `name` spells and returns what it observed; every other call behaves like an empty
//! keystore. Actions:
//!
//! | name            | action                                                    |
//! |-----------------|-----------------------------------------------------------|
//! | `spin`          | loops forever (CPU deadline)                              |
//! | `alloc`         | allocates without bound (memory limit)                    |
//! | `panic`         | panics (trap)                                             |
//! | `sleep`         | blocks in a host call for a minute (wall-clock deadline)  |
//! | `env`           | returns the environment variables and arguments it sees   |
//! | `read:<path>`   | reads a file                                              |
//! | `write:<path>`  | writes a file                                             |
//! | `http:<url>`    | GET through wasi:http; returns the status and body        |
//! | `tcp:<addr>`    | opens a TCP connection through wasi:sockets               |
//! | `udp:<addr>`    | sends a UDP datagram through wasi:sockets                 |
//! | `resolve:<host>`| looks a host name up through wasi:sockets                 |
//! | `symlink:<to>`  | makes `/data/made-link` point to `<to>`, then reads it    |
//! | `print:<text>`  | writes `<text>` to stdout and stderr                      |
//! | `files:<n>`     | opens `/data` `<n>` times and keeps every handle; returns how many it got |
//! | `empty:<n>`     | makes `<n>` zero-length writes to stdout                  |
//! | `lines:<n>`     | writes `<n>` lines to stdout in one write                 |
//! | `big:<bytes>`   | returns a record of that many bytes                       |
//! | `huge`          | returns a record of 1 MiB + 1 byte, over the limit        |
//! | `garbage`       | returns bytes that are no key record                      |
//!
//! With a directory granted, it is also a working keystore for every other name (the
//! fs plugin's store), so that a server can run on it and meet the actions among
//! normal keys. While the file `/data/.stall` exists, every call first stalls: it
//! spins if the file says `spin`, else it sleeps — the whole deadline, every call.

use std::time::Duration;

use keyhost_fs_store::DirStore;
use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Status, export_keystore};

struct Hostile {
    dir: Option<DirStore>,
}

impl Hostile {
    /// Stalls while `/data/.stall` exists (see the module documentation).
    fn stall(&self) {
        if self.dir.is_none() {
            return;
        }
        match std::fs::read_to_string("/data/.stall").as_deref().map(str::trim) {
            Ok("spin") => spin(),
            Ok(_) => std::thread::sleep(Duration::from_secs(3600)),
            Err(_) => {}
        }
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Keystore for Hostile {
    fn info() -> Info {
        Info {
            name: "hostile".into(),
            version: "0.0.0".into(),
            features: vec![],
            settings: vec![],
        }
    }

    fn open(_config: Config) -> Result<Self, Error> {
        let granted = std::fs::metadata("/data").is_ok();
        Ok(Self {
            dir: if granted { Some(DirStore::open("/data")?) } else { None },
        })
    }

    fn status(&self) -> Result<Status, Error> {
        self.stall();
        Ok(Status {
            latency_ms: None,
            detail: None,
        })
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        self.stall();
        match &self.dir {
            Some(dir) => dir.create(name, value),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        self.stall();
        let (action, arg) = name.split_once(':').unwrap_or((name, ""));
        match action {
            "spin" => spin(),
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            "sleep" => {
                std::thread::sleep(Duration::from_secs(60));
                Ok(b"woke up".to_vec())
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                let args: Vec<String> = std::env::args().collect();
                Ok(format!("vars={vars:?} args={args:?}").into_bytes())
            }
            "read" => std::fs::read(arg).map_err(|e| Error::AccessDenied(format!("read {arg}: {e}"))),
            "write" => std::fs::write(arg, b"escaped")
                .map(|()| b"written".to_vec())
                .map_err(|e| Error::AccessDenied(format!("write {arg}: {e}"))),
            "http" => http_get(arg),
            "egress-many" => egress_many(arg),
            "egress-big" => egress_big(arg),
            "tcp" => std::net::TcpStream::connect(arg)
                .map(|_| b"connected".to_vec())
                .map_err(|e| Error::AccessDenied(format!("tcp {arg}: {e}"))),
            "udp" => std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|socket| socket.send_to(b"escaped", arg))
                .map(|_| b"sent".to_vec())
                .map_err(|e| Error::AccessDenied(format!("udp {arg}: {e}"))),
            "resolve" => {
                use std::net::ToSocketAddrs;
                (arg, 443)
                    .to_socket_addrs()
                    .map(|addrs| format!("{:?}", addrs.collect::<Vec<_>>()).into_bytes())
                    .map_err(|e| Error::AccessDenied(format!("resolve {arg}: {e}")))
            }
            "symlink" => {
                let dirs = wasip2::filesystem::preopens::get_directories();
                let (data, _) = dirs
                    .iter()
                    .find(|(_, path)| path == "/data")
                    .ok_or_else(|| Error::AccessDenied("no /data".into()))?;
                data.symlink_at(arg, "made-link")
                    .map_err(|e| Error::AccessDenied(format!("symlink {arg}: {e:?}")))?;
                std::fs::read("/data/made-link").map_err(|e| Error::AccessDenied(format!("read through the link: {e}")))
            }
            "print" => {
                println!("{arg}");
                eprintln!("{arg}");
                Ok(Vec::new())
            }
            "files" => {
                let n: usize = arg.parse().map_err(|_| Error::InvalidArgument("files:<n>".into()))?;
                let mut opened = 0;
                for _ in 0..n {
                    match std::fs::File::open("/data") {
                        // Held for the life of the instance.
                        Ok(file) => std::mem::forget(file),
                        Err(_) => break,
                    }
                    opened += 1;
                }
                Ok(opened.to_string().into_bytes())
            }
            "lines" => {
                let n: usize = arg.parse().map_err(|_| Error::InvalidArgument("lines:<n>".into()))?;
                let out = wasip2::cli::stdout::get_stdout();
                for chunk in "x\n".repeat(n).as_bytes().chunks(4096) {
                    out.blocking_write_and_flush(chunk)
                        .map_err(|e| Error::Unavailable(format!("write: {e:?}")))?;
                }
                Ok(b"written".to_vec())
            }
            "empty" => {
                let n: usize = arg.parse().map_err(|_| Error::InvalidArgument("empty:<n>".into()))?;
                let out = wasip2::cli::stdout::get_stdout();
                for _ in 0..n {
                    out.write(&[])
                        .map_err(|e| Error::Unavailable(format!("write: {e:?}")))?;
                }
                Ok(b"written".to_vec())
            }
            "big" => {
                let len: usize = arg.parse().map_err(|_| Error::InvalidArgument("big:<bytes>".into()))?;
                Ok(vec![0x5a; len])
            }
            "huge" => Ok(vec![0x5a; (1 << 20) + 1]),
            "garbage" => Ok(b"this is not a key record".to_vec()),
            _ => match &self.dir {
                Some(dir) => dir.get(name),
                None => Err(Error::NotFound),
            },
        }
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        self.stall();
        match &self.dir {
            Some(dir) => dir.delete(name),
            None => Err(Error::NotFound),
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        self.stall();
        match &self.dir {
            Some(dir) => dir.list(prefix, after, limit),
            None => Ok(Page {
                names: vec![],
                next: None,
            }),
        }
    }
}

fn http_get(url: &str) -> Result<Vec<u8>, Error> {
    use wstd::http::{Body, Client, Request};
    wstd::runtime::block_on(async {
        let request = Request::get(url)
            .body(Body::empty())
            .map_err(|e| Error::InvalidArgument(format!("bad url {url}: {e}")))?;
        let mut response = Client::new()
            .send(request)
            .await
            .map_err(|e| Error::Unavailable(format!("http {url}: {e:?}")))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .contents()
            .await
            .map_err(|e| Error::Unavailable(format!("http body {url}: {e:?}")))?
            .to_vec();
        let mut out = format!("{status} ").into_bytes();
        out.extend(body);
        Ok(out)
    })
}

/// Starts one POST of `body_len` bytes to `authority` (host:port) with raw
/// wasi:http, without finishing its body: the host has taken the request.
fn start_post(
    authority: &str,
) -> Result<
    (
        wasip2::http::types::OutgoingBody,
        wasip2::http::types::FutureIncomingResponse,
    ),
    Error,
> {
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let bad = |what: &str| Error::InvalidArgument(format!("cannot set the request's {what}"));
    request.set_method(&Method::Post).map_err(|()| bad("method"))?;
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| bad("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| bad("authority"))?;
    request.set_path_with_query(Some("/")).map_err(|()| bad("path"))?;
    let body = request.body().map_err(|()| bad("body"))?;
    let future = wasip2::http::outgoing_handler::handle(request, None)
        .map_err(|e| Error::Unavailable(format!("handle: {e:?}")))?;
    Ok((body, future))
}

/// Writes `len` bytes to `body` in 64 KiB pieces of one buffer (the plugin never
/// holds the whole body), then finishes it.
fn write_body(body: wasip2::http::types::OutgoingBody, len: usize) -> Result<(), String> {
    let chunk = vec![b'x'; 64 << 10];
    {
        let stream = body.write().map_err(|()| "no body stream".to_owned())?;
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len()).min(4096);
            stream
                .blocking_write_and_flush(&chunk[..n])
                .map_err(|e| format!("write: {e:?}"))?;
            left -= n;
        }
    }
    wasip2::http::types::OutgoingBody::finish(body, None).map_err(|e| format!("finish: {e:?}"))
}

/// The status of an answer, or the error the host gave.
fn outcome(future: wasip2::http::types::FutureIncomingResponse) -> String {
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => format!("{}", response.status()),
        Some(Ok(Err(e))) => format!("{e:?}"),
        other => format!("{other:?}"),
    }
}

/// `egress-many:HOST:PORT/COUNT`: starts COUNT requests before finishing any body,
/// then finishes them and says how each ended, space-separated.
fn egress_many(arg: &str) -> Result<Vec<u8>, Error> {
    let (authority, count) = arg.split_once('/').ok_or_else(|| Error::InvalidArgument(arg.into()))?;
    let count: usize = count.parse().map_err(|_| Error::InvalidArgument(arg.into()))?;
    let mut started = Vec::new();
    for _ in 0..count {
        started.push(start_post(authority)?);
    }
    let mut outcomes = Vec::new();
    for (body, future) in started {
        let written = write_body(body, 16);
        outcomes.push(match written {
            Ok(()) => outcome(future),
            Err(e) => format!("{e} / {}", outcome(future)),
        });
    }
    Ok(outcomes.join(" ").into_bytes())
}

/// `egress-big:HOST:PORT/BALLAST_MIB/BODY_MIB`: holds BALLAST_MIB of its own
/// memory, then sends a body of BODY_MIB, and says how it ended.
fn egress_big(arg: &str) -> Result<Vec<u8>, Error> {
    let parts: Vec<&str> = arg.split('/').collect();
    let [authority, ballast, body_mib] = parts[..] else {
        return Err(Error::InvalidArgument(arg.into()));
    };
    let mib = |s: &str| s.parse::<usize>().map_err(|_| Error::InvalidArgument(arg.into()));
    let ballast = vec![1u8; mib(ballast)? << 20];
    std::hint::black_box(&ballast);
    let (body, future) = start_post(authority)?;
    let written = write_body(body, mib(body_mib)? << 20);
    let result = match written {
        Ok(()) => outcome(future),
        Err(e) => format!("{e} / {}", outcome(future)),
    };
    std::hint::black_box(&ballast);
    Ok(result.into_bytes())
}

export_keystore!(Hostile);

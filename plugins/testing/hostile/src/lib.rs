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
//! | `print:<text>`  | writes `<text>` to stdout and stderr                      |
//! | `big:<bytes>`   | returns a record of that many bytes                       |

use std::time::Duration;

use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Status, export_keystore};

struct Hostile;

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
        Ok(Self)
    }

    fn status(&self) -> Result<Status, Error> {
        Ok(Status {
            latency_ms: None,
            detail: None,
        })
    }

    fn create(&self, _name: &str, _value: &[u8]) -> Result<(), Error> {
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        let (action, arg) = name.split_once(':').unwrap_or((name, ""));
        match action {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
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
            "tcp" => std::net::TcpStream::connect(arg)
                .map(|_| b"connected".to_vec())
                .map_err(|e| Error::AccessDenied(format!("tcp {arg}: {e}"))),
            "print" => {
                println!("{arg}");
                eprintln!("{arg}");
                Ok(Vec::new())
            }
            "big" => {
                let len: usize = arg.parse().map_err(|_| Error::InvalidArgument("big:<bytes>".into()))?;
                Ok(vec![0x5a; len])
            }
            _ => Err(Error::NotFound),
        }
    }

    fn delete(&self, _name: &str) -> Result<(), Error> {
        Err(Error::NotFound)
    }

    fn list(&self, _prefix: &str, _after: Option<&str>, _limit: u32) -> Result<Page, Error> {
        Ok(Page {
            names: vec![],
            next: None,
        })
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

export_keystore!(Hostile);

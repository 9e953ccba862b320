//! The one parser of `http` and `https` URLs that keyhost reads from configuration
//! files and command lines: endpoints (AWS, KMS, KES servers) and the origins that
//! plugins are granted.
//!
//! Every check of a URL (is it https, is its host this machine) and every use of it
//! must see the same host. Two parsers that disagree about where the host starts
//! are how `http://[::1]@attacker.example` passed a "plain http only to loopback"
//! check while the client sent the request, and the secret in it, to
//! `attacker.example`. So a URL is parsed here once, anything that parsers are
//! known to read differently is refused (credentials, back slashes, white space,
//! control and non-ASCII characters), and what is passed on to a client is the
//! canonical form ([`HttpUrl::as_str`]), never the text as it was written.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::net::IpAddr;

/// Why a text is not an http or https URL keyhost accepts. The messages say what
/// to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("'{text}' is not a URL ({why}); write it as https://host[:port]")]
    NotAUrl {
        /// The text.
        text: String,
        /// What the parser said.
        why: String,
    },
    /// A scheme other than http or https.
    #[error("'{text}': scheme '{scheme}' is not http or https")]
    Scheme {
        /// The text.
        text: String,
        /// Its scheme.
        scheme: String,
    },
    /// User name or password before the host.
    #[error(
        "'{0}' contains credentials (user@host); write the host alone, and give credentials where the configuration asks for them"
    )]
    Credentials(String),
    /// A character that URL parsers read differently.
    #[error(
        "'{0}' contains a back slash, white space, a control or a non-ASCII character; write the URL in plain ASCII"
    )]
    Ambiguous(String),
}

/// The scheme of an [`HttpUrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// An `http` or `https` URL with a host and without credentials, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    url: url::Url,
    scheme: Scheme,
    host: String,
    port: u16,
}

impl HttpUrl {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// When `text` is not an absolute http or https URL with a host, names
    /// credentials, or holds a character that parsers read differently.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        if text
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(UrlError::Ambiguous(text.to_owned()));
        }
        let url = url::Url::parse(text).map_err(|e| UrlError::NotAUrl {
            text: text.to_owned(),
            why: e.to_string(),
        })?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(UrlError::Scheme {
                    text: text.to_owned(),
                    scheme: other.to_owned(),
                });
            }
        };
        // Any '@' before the path is userinfo to one parser or another; refuse it
        // wherever it is in the authority, not only where this parser found it.
        let authority = &text[text.find("//").map_or(0, |i| i + 2)..];
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        if !url.username().is_empty() || url.password().is_some() || authority.contains('@') {
            return Err(UrlError::Credentials(text.to_owned()));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => {
                return Err(UrlError::NotAUrl {
                    text: text.to_owned(),
                    why: "no host".into(),
                });
            }
        };
        if host.is_empty() {
            return Err(UrlError::NotAUrl {
                text: text.to_owned(),
                why: "no host".into(),
            });
        }
        let port = url.port().unwrap_or(scheme.default_port());
        Ok(Self {
            url,
            scheme,
            host,
            port,
        })
    }

    /// Its scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether it is https.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// Its host: a lower-case domain without a trailing dot, or an IP address
    /// (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its port, the scheme's default when it names none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host is a loopback address, written as an address: what may be
    /// spoken to in plain http. A name, `localhost` included, is resolved by the
    /// system's resolver (search domains, a missing hosts entry) and is not trusted
    /// to stay on this machine.
    pub fn is_loopback(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
            IpAddr::V4(v4) => v4.is_loopback(),
        })
    }

    /// Whether the host names this machine, by a loopback address or as
    /// `localhost`: for preferring a local endpoint, never for trusting one.
    pub fn is_local(&self) -> bool {
        self.is_loopback() || self.host.eq_ignore_ascii_case("localhost")
    }

    /// Whether it names more than an origin: a path other than `/`, a query or a
    /// fragment.
    pub fn has_path(&self) -> bool {
        self.url.path() != "/" || self.url.query().is_some() || self.url.fragment().is_some()
    }

    /// The canonical form, to hand to an HTTP client: the host this check saw.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The canonical form without the lone `/` path that [`HttpUrl::as_str`] adds
    /// to a bare origin: an endpoint to which a client appends its own paths.
    pub fn endpoint(&self) -> &str {
        let s = self.url.as_str();
        if self.url.path() == "/" && self.url.query().is_none() && self.url.fragment().is_none() {
            s.strip_suffix('/').unwrap_or(s)
        } else {
            s
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_are_read_once() {
        for (text, scheme, host, port, loopback) in [
            (
                "https://kms.us-east-1.amazonaws.com",
                Scheme::Https,
                "kms.us-east-1.amazonaws.com",
                443,
                false,
            ),
            ("http://127.0.0.1:4566", Scheme::Http, "127.0.0.1", 4566, true),
            ("http://localhost:4566/", Scheme::Http, "localhost", 4566, false),
            ("HTTP://LocalHost.:80", Scheme::Http, "localhost", 80, false),
            ("http://[::1]:4566", Scheme::Http, "::1", 4566, true),
            ("http://[::ffff:127.0.0.1]", Scheme::Http, "::ffff:127.0.0.1", 80, true),
            ("http://127.1", Scheme::Http, "127.0.0.1", 80, true),
            ("http://0x7f000001", Scheme::Http, "127.0.0.1", 80, true),
            ("http://10.0.0.1:4566", Scheme::Http, "10.0.0.1", 4566, false),
            (
                "http://127.0.0.1.example.com",
                Scheme::Http,
                "127.0.0.1.example.com",
                80,
                false,
            ),
            (
                "http://localhost.example.com",
                Scheme::Http,
                "localhost.example.com",
                80,
                false,
            ),
        ] {
            let url = HttpUrl::parse(text).unwrap();
            assert_eq!(url.is_local(), loopback || host == "localhost", "{text}");
            assert_eq!(
                (url.scheme(), url.host(), url.port(), url.is_loopback()),
                (scheme, host, port, loopback),
                "{text}"
            );
        }
    }

    #[test]
    fn credentials_anywhere_in_the_authority_are_refused() {
        for text in [
            "http://[::1]@attacker.example",
            "http://127.0.0.1@attacker.example",
            "http://localhost:80@attacker.example/",
            "http://user:pass@127.0.0.1",
            "http://@127.0.0.1",
            "https://a@b@c",
            "http://127.0.0.1%40attacker.example",
        ] {
            let got = HttpUrl::parse(text);
            assert!(
                matches!(got, Err(UrlError::Credentials(_) | UrlError::NotAUrl { .. })),
                "{text}: {got:?}"
            );
            if let Ok(url) = got {
                assert!(!url.is_loopback(), "{text}");
            }
        }
    }

    #[test]
    fn what_parsers_read_differently_is_refused() {
        for text in [
            "http://127.0.0.1\\@attacker.example",
            "http://127.0.0.1 @attacker.example",
            "http://127.0.0.1\t.attacker.example",
            "http://127.0.0.1\n",
            "http://ｌocalhost",
        ] {
            assert!(matches!(HttpUrl::parse(text), Err(UrlError::Ambiguous(_))), "{text}");
        }
        for text in ["ftp://127.0.0.1", "file:///etc/passwd", "127.0.0.1:4566", "http://"] {
            assert!(HttpUrl::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_canonical_form_names_the_host_that_was_checked() {
        let url = HttpUrl::parse("http://LOCALHOST:4566").unwrap();
        assert_eq!(url.as_str(), "http://localhost:4566/");
        assert_eq!(url.endpoint(), "http://localhost:4566");
        assert_eq!(HttpUrl::parse("https://h:443/p/").unwrap().endpoint(), "https://h/p/");
        assert!(!url.has_path());
        assert!(HttpUrl::parse("https://h/p").unwrap().has_path());
        assert!(HttpUrl::parse("https://h/?q").unwrap().has_path());
    }
}

//! What to load: a plugin's source, settings, grants and limits, and what it says about itself.

use super::*;

/// Where a plugin's code comes from.
#[derive(Clone)]
pub enum PluginSource {
    /// A `.wasm` component file.
    File(PathBuf),
    /// A component embedded in the binary, e.g. a bundled plugin.
    Embedded {
        /// How it is called in messages, e.g. `builtin:fs`.
        label: String,
        /// The component.
        bytes: &'static [u8],
    },
}

impl fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl PluginSource {
    /// How the source is named in messages.
    pub fn label(&self) -> String {
        match self {
            PluginSource::File(path) => path.display().to_string(),
            PluginSource::Embedded { label, .. } => label.clone(),
        }
    }
}

/// The capabilities granted to a plugin. The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Origins the plugin may send HTTP requests to.
    pub http: Vec<Origin>,
    /// A directory the plugin may read and write, seen inside as [`GUEST_DIR`].
    pub dir: Option<PathBuf>,
    /// Whether the plugin may only read `dir`: every write there fails as a
    /// permission error. The conformance kit grants a directory this way to check
    /// what a plugin answers when its backend refuses writes.
    pub dir_read_only: bool,
    /// How the host connects to granted `https` origins that need more than the
    /// public roots: a private CA, a client certificate. Each must be in `http`.
    pub tls: HashMap<Origin, OriginTls>,
}

/// The TLS the host uses for one granted `https` origin. The plugin asks for a URL
/// as usual; the host verifies the server against `ca_pem` and presents the client
/// certificate itself, so the plugin never holds the key.
#[derive(Clone, Default)]
pub struct OriginTls {
    /// PEM CA certificates that the origin's certificate must chain to. They replace
    /// the public roots for this origin. `None`: the public roots (and the
    /// runtime's extra roots).
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM certificate chain and its PEM private key, presented to the origin.
    pub client: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

impl fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

/// Resource limits of a plugin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest linear memory of an instance, in bytes.
    pub memory: usize,
    /// The deadline of one call (including the wait for a free instance).
    pub timeout: Duration,
    /// How many instances run calls at the same time.
    pub instances: usize,
    /// How many calls may wait for a free instance before further calls are refused.
    pub max_waiting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 64 << 20,
            timeout: Duration::from_secs(10),
            instances: 4,
            max_waiting: 1024,
        }
    }
}

/// Everything needed to load a plugin.
#[derive(Clone)]
pub struct PluginSpec {
    /// The name used in logs and messages.
    pub name: String,
    /// The component.
    pub source: PluginSource,
    /// The expected SHA-256 of the component (hex); loading fails on a mismatch.
    pub sha256: Option<String>,
    /// Settings served to the plugin through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// Granted capabilities.
    pub grants: Grants,
    /// Resource limits.
    pub limits: Limits,
}

impl fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Settings may hold credentials: show their keys only.
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("sha256", &self.sha256)
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .field("grants", &self.grants)
            .field("limits", &self.limits)
            .finish()
    }
}

impl PluginSpec {
    /// A spec with no settings, no grants and default limits.
    pub fn new(name: impl Into<String>, source: PluginSource) -> Self {
        Self {
            name: name.into(),
            source,
            sha256: None,
            config: BTreeMap::new(),
            grants: Grants::default(),
            limits: Limits::default(),
        }
    }
}

/// A setting a plugin reads, as it describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub name: String,
    /// Whether `open` fails without it.
    pub required: bool,
    /// Whether the value is secret.
    pub secret: bool,
    /// What it is, for operators.
    pub description: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Its short name, e.g. `fs`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Optional capabilities.
    pub features: Vec<String>,
    /// Every setting it reads.
    pub settings: Vec<Setting>,
}

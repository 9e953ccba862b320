//! `keyhost`: a KES-compatible key server whose keystores are sandboxed WebAssembly
//! components, and the tools that go with it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The static (musl) build's allocator: musl's own is slow under many threads.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd;
mod files;
mod units;

/// The version and the commit it was built from (`build.rs`).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("KEYHOST_COMMIT"), ")");

/// A KES-compatible key server whose keystores are sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "keyhost", version = VERSION, propagate_version = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Server(cmd::server::ServerArgs),
    /// Work with keystore plugins: run the conformance kit.
    #[command(subcommand)]
    Plugin(Box<cmd::plugin::PluginCommand>),
    /// Make identities (API keys, certificates) and compute them.
    #[command(subcommand)]
    Identity(cmd::identity::IdentityCommand),
    /// Manage keys on a running server.
    Key(cmd::key::KeyArgs),
    /// Read (and on v0.16-style servers change) a running server's policies.
    Policy(cmd::policy::PolicyArgs),
    Status(cmd::status::StatusArgs),
    Metric(cmd::status::MetricArgs),
    Log(LogCommand),
    Ls(cmd::key::LsArgs),
    Migrate(cmd::migrate::MigrateArgs),
    /// Make key-encryption keys for host-side sealing (keystore.seal).
    #[command(subcommand)]
    Seal(cmd::seal::SealCommand),
    /// Print shell completions: `keyhost completion bash > /etc/bash_completion.d/keyhost`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// KES v0.16's spelling of some commands (`tool identity new|of`).
    #[command(subcommand, hide = true)]
    Tool(ToolCommand),
}

#[derive(Debug, Subcommand)]
enum ToolCommand {
    /// Same as `keyhost identity`.
    #[command(subcommand)]
    Identity(cmd::identity::IdentityCommand),
}

/// Follow a server's audit or error log, live (KES v0.16: `log trace`).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct LogCommand {
    #[command(flatten)]
    args: cmd::status::LogArgs,
    #[command(subcommand)]
    v016: Option<LogV016>,
}

#[derive(Debug, Subcommand)]
enum LogV016 {
    /// KES v0.16's spelling: `log trace [--type audit|error]`.
    #[command(hide = true)]
    Trace(cmd::status::LogArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every file keyhost or a plugin creates is its owner's alone, whatever the
    // umask it was started with: key files, backups and private keys hold secrets.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Log lines go through a writer thread: a standard error that nobody reads
    // must not block the threads that serve requests. Lines beyond its buffer are
    // dropped (and counted in a final line) rather than waited for.
    let (stderr, _flush_at_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16_384)
        .thread_name("keyhost-log")
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYHOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,keyhost=info")),
        )
        .with_writer(stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Plugin(command) => command.run().await,
            Command::Server(args) => args.run().await,
            Command::Identity(command) | Command::Tool(ToolCommand::Identity(command)) => command.run().await,
            Command::Key(args) => args.run().await,
            Command::Policy(args) => args.run().await,
            Command::Status(args) => args.run().await,
            Command::Metric(args) => args.run().await,
            Command::Log(LogCommand {
                v016: Some(LogV016::Trace(args)),
                ..
            })
            | Command::Log(LogCommand { args, v016: None }) => args.run().await,
            Command::Migrate(args) => args.run().await,
            Command::Seal(command) => command.run().await,
            Command::Ls(args) => args.run().await,
            Command::Completion { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(shell, &mut Cli::command(), "keyhost", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
        }
    })
}

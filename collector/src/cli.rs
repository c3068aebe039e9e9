//! The command line: `groundtrail-collector <command>`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Groundtrail's collector: receives agents' CloudTrail records and writes a CloudTrail trail
/// (gzip log files and a signed digest chain) to a local directory or S3.
#[derive(Debug, Parser)]
#[command(name = "groundtrail-collector", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector. Without --config, the embedded default: listen on 127.0.0.1:7480 and
    /// write the trail to ./groundtrail-data/trail.
    Serve(ServeArgs),
    /// Write a new RSA-2048 digest signing key (mode 0600) and print its fingerprint and public key.
    Keygen(KeygenArgs),
    /// Make a CA, a server certificate and agent client certificates for mTLS.
    Pki(PkiArgs),
    /// Check the trail's log files and digest chain, like `aws cloudtrail validate-logs`.
    ValidateLogs(Box<crate::validate::Args>),
    /// Look up management events in the collector's event history, like
    /// `aws cloudtrail lookup-events` (same flags, same output).
    LookupEvents(Box<crate::lookup_cli::Args>),
    /// Alerts raised by the detection rules, the rules loaded, and silences, through the
    /// collector's API.
    Alerts(Box<crate::alerts_cli::Args>),
    /// Validate a config file (with the environment overrides applied) and print the
    /// effective configuration; errors name the field.
    CheckConfig(ServeArgs),
    /// Print the configuration reference: `--example` prints a commented example of every
    /// field with its default, generated from the config types.
    Config(ConfigArgs),
}

/// `config`
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Print the commented example (packaging/config/collector.example.toml).
    #[arg(long)]
    pub example: bool,
}

/// `serve`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; without it the embedded default is used.
    #[arg(long, short, env = "GROUNDTRAIL_COLLECTOR_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `keygen`
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the PKCS#8 PEM private key.
    #[arg(long, default_value = "groundtrail-data/collector/signing-key.pem")]
    pub out: PathBuf,
    /// Replace an existing key (digests it signed then need its public key kept as retired).
    #[arg(long)]
    pub force: bool,
}

/// `pki`
#[derive(Debug, clap::Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    pub command: PkiCommand,
}

/// `pki <command>`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the CA (ca.pem, ca.key) and the collector's server certificate (server.pem,
    /// server.key) for localhost, 127.0.0.1, ::1 and every --san.
    Init {
        /// Directory for the files (created).
        #[arg(long, default_value = "groundtrail-data/pki")]
        dir: PathBuf,
        /// Extra DNS name or IP address for the server certificate (repeatable).
        #[arg(long)]
        san: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate whose common name is NAME (agents/NAME.pem, agents/NAME.key).
    Agent {
        /// The agent's name, as `[[agents]] name` in the collector config.
        name: String,
        /// Directory holding ca.pem and ca.key.
        #[arg(long, default_value = "groundtrail-data/pki")]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

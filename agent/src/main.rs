//! `groundtrail-agent`: parses the command line and calls the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use groundtrail_agent::cli::{self, Cli, Command};
use groundtrail_agent::runtime;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    // Offline and synchronous, with exit codes of their own (0, 1, 2): no runtime, no logging
    // setup needed.
    let cli = match cli.command {
        Command::Buffer { command } => return groundtrail_agent::buffer_tools::run(command),
        other => Cli { command: other },
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<bool> = rt.block_on(async {
        match cli.command {
            Command::Run { config } => {
                let settings = cli::load_settings(config.as_deref())?;
                // Installed before anything listens (see `termination_signal`).
                let signal = groundtrail_common::shutdown::termination_signal()
                    .context("cannot install the SIGTERM/SIGINT handlers")?;
                runtime::run(settings, signal).await?;
                Ok(true)
            }
            Command::Status {
                config,
                socket,
                metrics,
            } => cli::status(config.as_deref(), socket.as_deref(), metrics)
                .await
                .map(|()| true),
            Command::ResendSetAside { config, socket } => {
                cli::resend_set_aside(config.as_deref(), socket.as_deref()).await
            }
            Command::PutAuditEvents {
                audit_events,
                channel_arn,
                config,
                socket,
            } => {
                cli::put_audit_events(
                    &audit_events,
                    channel_arn.as_deref(),
                    config.as_deref(),
                    socket.as_deref(),
                )
                .await
            }
            Command::CheckConfig { config } => {
                let settings = cli::load_settings(config.as_deref())?;
                println!("{}", toml::to_string_pretty(&settings.effective())?);
                Ok(true)
            }
            Command::Buffer { .. } => unreachable!("handled before the runtime starts"),
            Command::Config { example } => {
                if !example {
                    anyhow::bail!("say what to print: `config --example`");
                }
                let text = groundtrail_agent::config::example().map_err(anyhow::Error::msg)?;
                print!("{text}");
                Ok(true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives threads that allocate at the same time arenas of their own (up to 8 per core),
/// each keeping freed memory: with tokio's workers and blocking threads and sled's I/O threads
/// that is megabytes of idle RSS for an agent that allocates little. Two arenas are plenty for
/// its rates. Must run before any other thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

//! `groundtrail-collector`: parses the command line and calls the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use groundtrail_collector::cli::{Cli, Command, KeygenArgs, PkiCommand, ServeArgs};
use groundtrail_collector::config::Config;
use groundtrail_common::shutdown::Shutdown;

/// glibc gives threads that allocate at the same time arenas of their own (up to 8 per core),
/// each keeping the memory it freed. The collector's request handlers, blocking tasks (parse,
/// fsync waits, the indexer) and fjall's and sled's threads all allocate, so at 10k records/s
/// those arenas held hundreds of MiB of freed memory. Four arenas keep contention low on the
/// few cores a collector has. Must run before any other thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve(args).await.map(|_| 0),
        Command::Keygen(args) => keygen(args).map(|_| 0),
        Command::Pki(args) => pki(args.command).map(|_| 0),
        Command::ValidateLogs(args) => {
            let code = groundtrail_collector::validate::run(*args).await?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Command::LookupEvents(args) => groundtrail_collector::lookup_cli::run(*args).await,
        Command::Alerts(args) => groundtrail_collector::alerts_cli::run(*args).await,
        Command::CheckConfig(args) => {
            let config = Config::load_or_default(args.config.as_deref())?;
            // How the sections map to trails, as TOML comments (the output stays a config).
            for spec in config.trail_specs().map_err(anyhow::Error::msg)? {
                println!("# {}", spec.describe());
            }
            print!("{}", config.redacted_toml()?);
            Ok(0)
        }
        Command::Config(args) => {
            if !args.example {
                anyhow::bail!("say what to print: `config --example`");
            }
            let text = groundtrail_collector::config::example().map_err(anyhow::Error::msg)?;
            print!("{text}");
            Ok(0)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load_or_default(args.config.as_deref())?;
    // Before the bind: a SIGTERM must find its handler as soon as the port answers.
    let signal = groundtrail_common::shutdown::termination_signal()
        .context("cannot install the SIGTERM/SIGINT handlers")?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let (tx, rx) = tokio::sync::broadcast::channel(1);
    tokio::spawn(async move {
        let name = signal.await;
        tracing::info!("{name} received, shutting down");
        groundtrail_common::sd_notify::notify("STOPPING=1");
        let _ = tx.send(());
    });
    groundtrail_collector::service::serve(config, listener, Shutdown::new(rx))
        .await
        .context("collector failed")
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let key = groundtrail_common::trail::SigningKey::generate()?;
    groundtrail_collector::signing_key::write_key(&args.out, &key, args.force)?;
    println!("wrote {} (mode 0600)", args.out.display());
    println!("fingerprint: {}", key.fingerprint());
    print!("{}", key.public_key_pem());
    println!(
        "\nIn the collector config:\n[signing]\nkey_file = {:?}",
        args.out.display().to_string()
    );
    Ok(())
}

fn pki(command: PkiCommand) -> anyhow::Result<()> {
    use groundtrail_collector::pki;
    match command {
        PkiCommand::Init { dir, san, force } => {
            let written = pki::init(&dir, &san, force)?;
            for f in &written.files {
                println!("wrote {}", f.display());
            }
            println!(
                "\nIn the collector config:\n[server]\nlisten = \"0.0.0.0:7480\"\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}",
                dir.join("server.pem").display().to_string(),
                dir.join("server.key").display().to_string(),
                dir.join("ca.pem").display().to_string(),
            );
            println!(
                "\nNext: `groundtrail-collector pki agent NAME --dir {}` for each agent.",
                dir.display()
            );
        }
        PkiCommand::Agent { name, dir, force } => {
            let written = pki::agent(&dir, &name, force)?;
            for f in &written.files {
                println!("wrote {}", f.display());
            }
            println!(
                "\nIn the agent config:\n[collector]\nurls = [\"https://<collector host>:7480\"]\nca = {:?}\nclient_cert = {:?}\nclient_key = {:?}",
                dir.join("ca.pem").display().to_string(),
                written.files[0].display().to_string(),
                written.files[1].display().to_string(),
            );
            println!(
                "\nIn the collector config:\n[[agents]]\nname = {name:?}\naccounts = [\"123456789012\"]   # the accounts it may write\nregions = []                    # empty: any region"
            );
        }
    }
    Ok(())
}

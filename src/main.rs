//! The `lite-apiserver` daemon: flags in, [`lite_apiserver::server::run`] runs.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT) or `--help`/
//! `--version`; 2 for bad flags or unreadable files (one line on stderr,
//! nothing written), and when `--incluster-address` needs adding but the
//! process may not (no `CAP_NET_ADMIN`); 1 when the daemon fails after the
//! flags were accepted (e.g. an address is in use).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use lite_apiserver::config::{Config, Exit};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let config = match Config::from_args(&args, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(Exit::Help(text)) | Err(Exit::Version(text)) => {
            println!("{}", text.trim_end());
            return ExitCode::SUCCESS;
        }
        Err(Exit::Error(e)) => {
            eprintln!("lite-apiserver: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.verbosity);
    if config.insecure_skip_tls_verify {
        log::warn!("--insecure-skip-tls-verify: the upstream's certificate is NOT verified; anyone on the path can impersonate the cloud");
    }
    let result = smol::block_on(lite_apiserver::server::run(
        config,
        shutdown_signal(),
        |_| {},
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lite-apiserver: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `RUST_LOG` wins; otherwise `-v` raises the level from info.
fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).format_timestamp_millis();
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.init();
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(mut signals) => {
            if let Some(Ok(signal)) = signals.next().await {
                log::info!("received {signal:?}");
            }
        }
        Err(e) => {
            log::warn!("cannot handle signals ({e}); stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

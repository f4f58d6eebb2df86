//! The `rsetcd` binary: etcd's command line in, a running member out.

use std::process::ExitCode;

use rsetcd::config::{Command, Config, ConfigError};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    if args.len() >= 2 && args[0] == "snapshot" && args[1] == "restore" {
        return snapshot_restore(&args[2..], &env);
    }
    let config = match Config::from_args(&args, &env) {
        Ok(Command::Run(config)) => config,
        Ok(Command::PrintVersion(etcd_version)) => {
            println!("etcd Version: {etcd_version}");
            println!("Git SHA: {}", option_env!("RSETCD_GIT_SHA").unwrap_or("not a git build"));
            println!("Go Version: none (rsetcd is written in Rust)");
            println!("Go OS/Arch: {}/{}", go_os(), go_arch());
            println!("rsetcd Version: {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::PrintHelp) => {
            println!("usage: rsetcd [flags]\n\nrsetcd takes etcd's flags; see README.md for which ones act.");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{}", error_line(&err));
            // Go's flag package exits with 2 on a bad command line; etcd does the same.
            return ExitCode::from(2);
        }
    };
    let outputs = match rsetcd::logging::Outputs::open(&config.log_outputs) {
        Ok(outputs) => outputs,
        Err(err) => {
            eprintln!("rsetcd: cannot open --log-outputs {:?}: {err}", config.log_outputs);
            return ExitCode::FAILURE;
        }
    };
    rsetcd::logging::init(&config.log_level, outputs);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("rsetcd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rsetcd::boot::run(*config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}").as_str(), "rsetcd stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// `rsetcd snapshot restore <file> [--name --data-dir --initial-cluster
/// --initial-cluster-token --initial-advertise-peer-urls]`, the flags of etcdutl's restore.
fn snapshot_restore(args: &[String], env: &[(String, String)]) -> ExitCode {
    let Some((file, flags)) = args.split_first().filter(|(f, _)| !f.starts_with('-')) else {
        eprintln!("usage: rsetcd snapshot restore <file> [--name --data-dir --initial-cluster --initial-cluster-token --initial-advertise-peer-urls]");
        return ExitCode::from(2);
    };
    let config = match Config::from_args(flags, env) {
        Ok(Command::Run(config)) => config,
        Ok(_) => return ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", error_line(&err));
            return ExitCode::from(2);
        }
    };
    match rsetcd::restore::restore(std::path::Path::new(file), &config) {
        Ok(done) => {
            println!(
                "restored snapshot {file} into {} (member {:x}, cluster {:x}, revision {})",
                config.data_dir.display(),
                done.member_id,
                done.cluster_id,
                done.revision
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("Error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn error_line(err: &ConfigError) -> String {
    format!("rsetcd: {err}")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn go_os() -> &'static str {
    std::env::consts::OS
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

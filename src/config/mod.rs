//! Typed configuration from etcd's flags and `ETCD_*` variables, with etcd's defaults.
//! Everything is checked here, before any file is written: a bad value names its flag.

pub mod file;
pub mod flags;

use std::path::PathBuf;
use std::time::Duration;

use flags::{FlagSpec, Kind};
use url::Url;

/// The etcd release whose API and behaviour rsetcd emulates by default; reported by Status,
/// `--version` and (later) `/version`. Kubernetes needs at least 3.5.13.
pub const DEFAULT_ETCD_VERSION: &str = "3.6.16";

const fn flag(name: &'static str, kind: Kind, effective: bool) -> FlagSpec {
    FlagSpec { name, kind, effective }
}

use Kind::{Bool, Value};

/// etcd's server flags. Those marked `false` are accepted so that existing unit files keep
/// starting, and produce a warning that they have no effect in rsetcd yet.
pub const FLAGS: &[FlagSpec] = &[
    flag("name", Value, true),
    flag("data-dir", Value, true),
    flag("listen-client-urls", Value, true),
    flag("advertise-client-urls", Value, true),
    flag("listen-peer-urls", Value, true),
    flag("initial-advertise-peer-urls", Value, true),
    flag("initial-cluster", Value, true),
    flag("initial-cluster-token", Value, true),
    flag("initial-cluster-state", Value, true),
    flag("max-request-bytes", Value, true),
    flag("max-txn-ops", Value, true),
    flag("quota-backend-bytes", Value, true),
    flag("log-level", Value, true),
    flag("heartbeat-interval", Value, true),
    flag("election-timeout", Value, true),
    flag("snapshot-count", Value, true),
    flag("snapshot-catchup-entries", Value, true),
    flag("experimental-snapshot-catchup-entries", Value, true),
    flag("emulated-etcd-version", Value, true),
    flag("version", Bool, true),
    flag("help", Bool, true),
    flag("config-file", Value, true),
    flag("logger", Value, true),
    flag("log-outputs", Value, true),
    flag("log-format", Value, false),
    flag("wal-dir", Value, true),
    flag("max-snapshots", Value, false),
    flag("max-wals", Value, false),
    flag("enable-v2", Bool, false),
    flag("enable-pprof", Bool, false),
    flag("metrics", Value, true),
    flag("listen-metrics-urls", Value, true),
    flag("listen-client-http-urls", Value, false),
    flag("auto-compaction-mode", Value, false),
    flag("auto-compaction-retention", Value, false),
    flag("strict-reconfig-check", Bool, false),
    flag("pre-vote", Bool, false),
    flag("initial-election-tick-advance", Bool, false),
    flag("max-concurrent-streams", Value, false),
    flag("grpc-keepalive-min-time", Value, false),
    flag("grpc-keepalive-interval", Value, false),
    flag("grpc-keepalive-timeout", Value, false),
    flag("backend-batch-interval", Value, false),
    flag("backend-batch-limit", Value, false),
    flag("backend-bbolt-freelist-type", Value, false),
    flag("auth-token", Value, true),
    flag("auth-token-ttl", Value, true),
    flag("bcrypt-cost", Value, true),
    flag("cors", Value, false),
    flag("host-whitelist", Value, false),
    flag("enable-grpc-gateway", Bool, false),
    flag("unsafe-no-fsync", Bool, false),
    flag("force-new-cluster", Bool, false),
    flag("socket-reuse-port", Bool, false),
    flag("socket-reuse-address", Bool, false),
    flag("feature-gates", Value, false),
    flag("experimental-initial-corrupt-check", Bool, false),
    flag("experimental-watch-progress-notify-interval", Value, true),
    flag("watch-progress-notify-interval", Value, true),
    flag("experimental-enable-lease-checkpoint", Bool, false),
    flag("experimental-compact-hash-check-enabled", Bool, false),
    flag("discovery", Value, false),
    flag("discovery-fallback", Value, false),
    flag("discovery-proxy", Value, false),
    flag("discovery-srv", Value, false),
    flag("self-signed-cert-validity", Value, false),
    flag("cipher-suites", Value, true),
    flag("tls-min-version", Value, true),
    flag("tls-max-version", Value, true),
    flag("cert-file", Value, true),
    flag("key-file", Value, true),
    flag("trusted-ca-file", Value, true),
    flag("client-cert-auth", Bool, true),
    flag("peer-cert-file", Value, true),
    flag("peer-key-file", Value, true),
    flag("peer-trusted-ca-file", Value, true),
    flag("peer-client-cert-auth", Bool, true),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// `--wal-dir`: the write-ahead log elsewhere than `<data-dir>/member/wal` (e.g. on a
    /// faster device), as etcd's dedicated WAL directory.
    pub wal_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<Url>,
    /// Extra URLs serving only `/metrics` and the health probes (none by default).
    pub listen_metrics_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// (member name, peer URL) in the order given.
    pub initial_cluster: Vec<(String, Url)>,
    pub initial_cluster_token: String,
    pub initial_cluster_state: ClusterState,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub quota_backend_bytes: i64,
    pub log_level: String,
    /// `--log-outputs`: `default`, `stderr`, `stdout` or file paths.
    pub log_outputs: Vec<String>,
    /// `--metrics=extensive`: gRPC handling-time histograms besides the basic metrics.
    pub extensive_metrics: bool,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    /// Raft log entries kept behind the applied index when the log is compacted, so that a
    /// slightly slow follower catches up from the log rather than a snapshot.
    pub snapshot_catchup_entries: u64,
    pub etcd_version: String,
    pub watch_progress_interval: Duration,
    pub auth_token: AuthToken,
    /// TLS on the client URLs (required when one of them is https).
    pub client_tls: Option<crate::tls::TlsSettings>,
    /// TLS between members (required when a peer URL is https).
    pub peer_tls: Option<crate::tls::TlsSettings>,
    /// How long an unused simple token stays valid (`--auth-token-ttl`, seconds).
    pub auth_token_ttl: Duration,
    /// bcrypt's cost for new passwords (`--bcrypt-cost`).
    pub bcrypt_cost: u32,
    /// Flags given that rsetcd does not act on yet (warned about at start-up).
    pub ignored_flags: Vec<String>,
    pub unknown_env: Vec<String>,
}

/// The client (`prefix` "") or peer (`prefix` "peer-") TLS settings: needed, and only used,
/// when one of `urls` is https.
fn tls_settings<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    urls: &[Url],
    prefix: &str,
) -> Result<Option<crate::tls::TlsSettings>, ConfigError> {
    let Some(https) = urls.iter().find(|u| u.scheme() == "https") else {
        return Ok(None);
    };
    let file =
        |flag: &str| get(&format!("{prefix}{flag}")).filter(|t| !t.is_empty()).map(PathBuf::from);
    let (Some(cert_file), Some(key_file)) = (file("cert-file"), file("key-file")) else {
        let side = if prefix.is_empty() { "client" } else { "peer" };
        return Err(ConfigError::Unsupported(format!(
            "TLS key/cert (--{prefix}cert-file, --{prefix}key-file) must be provided for {side} url {}",
            display_url(https)
        )));
    };
    let client_cert_auth = match get(&format!("{prefix}client-cert-auth")) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ConfigError::Unsupported(format!(
                "invalid value {other:?} for flag -{prefix}client-cert-auth: expected true or false"
            )))
        }
    };
    let settings = crate::tls::TlsSettings {
        cert_file,
        key_file,
        trusted_ca_file: file("trusted-ca-file"),
        client_cert_auth,
        cipher_suites: get("cipher-suites")
            .filter(|t| !t.is_empty())
            .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default(),
        min_version: get("tls-min-version").unwrap_or("TLS1.2").to_string(),
        max_version: get("tls-max-version").unwrap_or("").to_string(),
    };
    settings.check().map_err(|e| ConfigError::Unsupported(e.to_string()))?;
    Ok(Some(settings))
}

/// `--auth-token`: etcd's `simple`, or `jwt` with its `key=value` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthToken {
    Simple,
    Jwt(Vec<(String, String)>),
}

/// etcd's `type[,key=value...]`; anything else is "auth: invalid auth options".
fn parse_auth_token(text: &str) -> Result<AuthToken, ConfigError> {
    let refuse = || invalid("auth-token", text, "auth: invalid auth options");
    let mut parts = text.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut options = Vec::new();
    for part in parts {
        let (key, value) = part.split_once('=').ok_or_else(refuse)?;
        options.push((key.to_string(), value.to_string()));
    }
    match kind {
        "simple" => Ok(AuthToken::Simple),
        "jwt" => Ok(AuthToken::Jwt(options)),
        _ => Err(refuse()),
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    PrintVersion(String),
    PrintHelp,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Flag(#[from] flags::FlagError),
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    Invalid { flag: &'static str, value: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    File(#[from] file::FileError),
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, value: value.to_string(), reason: reason.into() }
}

impl Config {
    /// Parses `args` (without the program name) and `env` as etcd would.
    pub fn from_args(args: &[String], env: &[(String, String)]) -> Result<Command, ConfigError> {
        let parsed = flags::parse(FLAGS, args, env)?;
        // With a config file, etcd takes every setting from it and ignores the other flags
        // and the ETCD_* variables.
        let from_file = match parsed.values.get("config-file") {
            Some(path) => Some(file::load(std::path::Path::new(path), FLAGS)?),
            None => None,
        };
        let v = from_file.as_ref().unwrap_or(&parsed.values);
        let get = |name: &str| v.get(name).map(String::as_str);
        if get("help") == Some("true") {
            return Ok(Command::PrintHelp);
        }
        let etcd_version = get("emulated-etcd-version").unwrap_or(DEFAULT_ETCD_VERSION).to_string();
        check_semver(&etcd_version)?;
        if get("version") == Some("true") {
            return Ok(Command::PrintVersion(etcd_version));
        }

        let name = get("name").unwrap_or("default").to_string();
        let data_dir = PathBuf::from(
            get("data-dir").map(str::to_string).unwrap_or_else(|| format!("{name}.etcd")),
        );
        let wal_dir = get("wal-dir").filter(|d| !d.is_empty()).map(PathBuf::from);
        let urls =
            |flag: &'static str, default: &str| parse_urls(flag, get(flag).unwrap_or(default));
        let listen_client_urls = urls("listen-client-urls", "http://localhost:2379")?;
        let advertise_client_urls = urls("advertise-client-urls", "http://localhost:2379")?;
        let listen_peer_urls = urls("listen-peer-urls", "http://localhost:2380")?;
        let initial_advertise_peer_urls =
            urls("initial-advertise-peer-urls", "http://localhost:2380")?;
        let default_cluster = initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{name}={}", display_url(u)))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_text = get("initial-cluster").map(str::to_string).unwrap_or(default_cluster);
        let initial_cluster = parse_initial_cluster(&cluster_text)?;
        let initial_cluster_state = match get("initial-cluster-state").unwrap_or("new") {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                return Err(invalid(
                    "initial-cluster-state",
                    other,
                    "valid values are new, existing",
                ))
            }
        };

        let heartbeat_ms: u64 = number(get("heartbeat-interval"), "heartbeat-interval", 100)?;
        let election_ms: u64 = number(get("election-timeout"), "election-timeout", 1000)?;
        if heartbeat_ms == 0 || election_ms < 5 * heartbeat_ms {
            return Err(invalid(
                "election-timeout",
                &election_ms.to_string(),
                format!("must be at least 5 times --heartbeat-interval ({heartbeat_ms})"),
            ));
        }
        let log_level = get("log-level").unwrap_or("info").to_string();
        if !["debug", "info", "warn", "error", "panic", "fatal"].contains(&log_level.as_str()) {
            return Err(invalid(
                "log-level",
                &log_level,
                "valid values are debug, info, warn, error, panic, fatal",
            ));
        }
        if let Some(logger) = get("logger").filter(|l| *l != "zap") {
            return Err(invalid("logger", logger, "only zap is supported"));
        }

        let progress_flags =
            ["watch-progress-notify-interval", "experimental-watch-progress-notify-interval"];
        if progress_flags.iter().all(|f| v.contains_key(f)) {
            return Err(ConfigError::Unsupported(
                "cannot set --watch-progress-notify-interval and --experimental-watch-progress-notify-interval at the same time".into(),
            ));
        }
        let watch_progress_interval =
            match progress_flags.iter().find_map(|f| get(f).map(|t| (*f, t))) {
                Some((flag, text)) => {
                    go_duration(text).ok_or_else(|| invalid(flag, text, "not a valid duration"))?
                }
                None => Duration::from_secs(600),
            };
        let auth_token = parse_auth_token(get("auth-token").unwrap_or("simple"))?;
        let client_tls = tls_settings(&get, &listen_client_urls, "")?;
        let peer_urls: Vec<Url> = listen_peer_urls
            .iter()
            .chain(&initial_advertise_peer_urls)
            .chain(initial_cluster.iter().map(|(_, u)| u))
            .cloned()
            .collect();
        let peer_tls = tls_settings(&get, &peer_urls, "peer-")?;
        let auth_token_ttl: u64 = number(get("auth-token-ttl"), "auth-token-ttl", 300)?;
        let bcrypt_cost: u32 = number(get("bcrypt-cost"), "bcrypt-cost", 10)?;
        // etcd warns and falls back to the default cost outside bcrypt's range.
        let bcrypt_cost = if (4..=31).contains(&bcrypt_cost) { bcrypt_cost } else { 10 };
        let ignored_flags = FLAGS
            .iter()
            .filter(|f| !f.effective && v.contains_key(f.name))
            .map(|f| format!("--{}", f.name))
            .collect();
        Ok(Command::Run(Box::new(Config {
            name,
            data_dir,
            wal_dir,
            listen_client_urls,
            listen_metrics_urls: match get("listen-metrics-urls") {
                Some(text) if !text.is_empty() => parse_urls("listen-metrics-urls", text)?,
                _ => Vec::new(),
            },
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_token: get("initial-cluster-token")
                .unwrap_or("etcd-cluster")
                .to_string(),
            initial_cluster_state,
            max_request_bytes: number(get("max-request-bytes"), "max-request-bytes", 1_572_864)?,
            max_txn_ops: number(get("max-txn-ops"), "max-txn-ops", 128)?,
            quota_backend_bytes: number(get("quota-backend-bytes"), "quota-backend-bytes", 0)?,
            log_level,
            extensive_metrics: match get("metrics").unwrap_or("basic") {
                "basic" => false,
                "extensive" => true,
                other => {
                    return Err(invalid("metrics", other, "valid values are basic, extensive"))
                }
            },
            log_outputs: get("log-outputs")
                .unwrap_or("default")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            election_timeout: Duration::from_millis(election_ms),
            snapshot_count: number(get("snapshot-count"), "snapshot-count", 10_000)?,
            snapshot_catchup_entries: match get("snapshot-catchup-entries") {
                Some(text) => number(Some(text), "snapshot-catchup-entries", 5_000)?,
                None => number(
                    get("experimental-snapshot-catchup-entries"),
                    "experimental-snapshot-catchup-entries",
                    5_000,
                )?,
            },
            etcd_version,
            // etcd never notifies more often than every 100 ms.
            watch_progress_interval: watch_progress_interval.max(Duration::from_millis(100)),
            auth_token,
            client_tls,
            peer_tls,
            auth_token_ttl: Duration::from_secs(auth_token_ttl.max(1)),
            bcrypt_cost,
            ignored_flags,
            unknown_env: parsed.unknown_env,
        })))
    }

    /// (name, peer URLs) in the order of `--initial-cluster`; a name may list several URLs.
    pub fn initial_members(&self) -> Vec<(String, Vec<String>)> {
        let mut initial: Vec<(String, Vec<String>)> = Vec::new();
        for (name, url) in &self.initial_cluster {
            let url = display_url(url);
            match initial.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url),
                None => initial.push((name.clone(), vec![url])),
            }
        }
        initial
    }

    /// Peer URLs of this member according to `--initial-cluster`.
    pub fn own_cluster_urls(&self) -> Vec<String> {
        self.initial_cluster
            .iter()
            .filter(|(n, _)| *n == self.name)
            .map(|(_, u)| display_url(u))
            .collect()
    }
}

/// A URL as etcd prints it: no trailing slash for a bare host:port.
pub fn display_url(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

fn number<T: std::str::FromStr>(
    text: Option<&str>,
    flag: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => t.parse().map_err(|_| invalid(flag, t, "not a valid number")),
    }
}

fn parse_urls(flag: &'static str, text: &str) -> Result<Vec<Url>, ConfigError> {
    text.split(',').map(|part| parse_url(flag, part.trim())).collect()
}

fn parse_url(flag: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| invalid(flag, text, e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https"
            if flag.contains("client") || flag.contains("peer") || flag == "initial-cluster" => {}
        "https" | "unix" | "unixs" => {
            return Err(invalid(
                flag,
                text,
                format!("{} URLs are not supported by rsetcd yet", url.scheme()),
            ));
        }
        _ => return Err(invalid(flag, text, "URL scheme must be http, https, unix, or unixs")),
    }
    if url.host_str().is_none() || url.port().is_none() {
        return Err(invalid(flag, text, "URL must be of the form scheme://host:port"));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(invalid(flag, text, "URL must not contain a path"));
    }
    Ok(url)
}

fn parse_initial_cluster(text: &str) -> Result<Vec<(String, Url)>, ConfigError> {
    text.split(',')
        .map(|entry| {
            let (name, url) = entry.split_once('=').ok_or_else(|| {
                invalid("initial-cluster", text, format!("{entry:?} is not of the form name=url"))
            })?;
            Ok((name.trim().to_string(), parse_url("initial-cluster", url.trim())?))
        })
        .collect()
}

/// Parses Go's `time.ParseDuration` syntax: `300ms`, `1m30s`, `2h`, `1.5s`, `10µs`.
pub fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

fn check_semver(version: &str) -> Result<(), ConfigError> {
    let parts: Vec<&str> = version.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(invalid("emulated-etcd-version", version, "must be a version like 3.6.16"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match Config::from_args(&args, &[])? {
            Command::Run(c) => Ok(*c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn etcd_defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(c.wal_dir, None);
        assert_eq!(c.own_cluster_urls(), vec!["http://localhost:2380".to_string()]);
        assert_eq!(c.max_txn_ops, 128);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("1µs"), Some(Duration::from_micros(1)));
        assert_eq!(go_duration("5"), None);
        let err = run(&[
            "--watch-progress-notify-interval=5s",
            "--experimental-watch-progress-notify-interval=5s",
        ]);
        assert!(err.is_err());
    }

    #[test]
    fn malformed_url_names_the_flag() {
        let err = run(&["--listen-client-urls", "127.0.0.1:2379"]).unwrap_err().to_string();
        assert!(err.contains("-listen-client-urls"), "{err}");
    }
}

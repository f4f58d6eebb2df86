//! `--config-file`: etcd's YAML configuration. Its keys are the flag names (plus the
//! `client-transport-security` and `peer-transport-security` sections); when a file is given,
//! etcd ignores every other flag and `ETCD_*` variable, and so does rsetcd.
//!
//! Unlike etcd, which ignores keys it does not know, a key that is no etcd setting is an
//! error naming it: a misspelt key would otherwise leave a setting at its default unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::flags::{FlagSpec, Kind};

/// Keys the YAML file spells differently from the flag.
const ALIASES: &[(&str, &str)] =
    &[("experimental-snapshot-catch-up-entries", "experimental-snapshot-catchup-entries")];

/// Keys of etcd's sample file for the v2 proxy, which etcd 3.6 no longer has and ignores.
const IGNORED: &[&str] = &[
    "proxy",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
];

/// The keys of `client-transport-security` and `peer-transport-security`.
const TLS_KEYS: &[&str] = &[
    "cert-file",
    "key-file",
    "client-cert-file",
    "client-key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
    "allowed-cn",
    "allowed-hostname",
    "skip-client-san-verification",
];

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path}: {reason}")]
    Syntax { path: String, reason: String },
    #[error("config file {path}: unknown key {key:?}")]
    UnknownKey { path: String, key: String },
    #[error("config file {path}: key {key:?}: {reason}")]
    BadValue { path: String, key: String, reason: String },
}

/// The settings of the file at `path`, as flag name -> flag text.
pub fn load(
    path: &Path,
    specs: &'static [FlagSpec],
) -> Result<BTreeMap<&'static str, String>, FileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| FileError::Read { path: shown.clone(), reason: e.to_string() })?;
    let document: Value = serde_yaml::from_str(&text)
        .map_err(|e| FileError::Syntax { path: shown.clone(), reason: e.to_string() })?;
    let entries = match document {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Mapping(entries) => entries,
        _ => {
            let reason = "the document must be a mapping of setting names to values".to_string();
            return Err(FileError::Syntax { path: shown, reason });
        }
    };
    let mut values = BTreeMap::new();
    for (key, value) in entries {
        let Some(key) = key.as_str().map(str::to_string) else {
            let reason = format!("setting names must be strings, found {key:?}");
            return Err(FileError::Syntax { path: shown, reason });
        };
        let bad =
            |reason: String| FileError::BadValue { path: shown.clone(), key: key.clone(), reason };
        if key == "client-transport-security" || key == "peer-transport-security" {
            for (flag, text) in tls_section(&key, value).map_err(bad)? {
                values.insert(flag, text);
            }
            continue;
        }
        if IGNORED.contains(&key.as_str()) {
            continue;
        }
        let name = ALIASES.iter().find(|(alias, _)| *alias == key).map_or(key.as_str(), |a| a.1);
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            return Err(FileError::UnknownKey { path: shown, key });
        };
        if let Some(text) = flag_text(spec, value).map_err(bad)? {
            values.insert(spec.name, text);
        }
    }
    Ok(values)
}

/// A setting's value as the flag would be written; `None` for an empty (null) setting.
fn flag_text(spec: &FlagSpec, value: Value) -> Result<Option<String>, String> {
    let scalar = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(format!("expected a single value, found {}", kind_of(other))),
        }
    };
    match (spec.kind, value) {
        (_, Value::Null) => Ok(None),
        (Kind::Bool, Value::Bool(b)) => Ok(Some(b.to_string())),
        (Kind::Bool, other) => Err(format!("expected true or false, found {}", kind_of(&other))),
        (Kind::Value, Value::Sequence(items)) => {
            let parts: Result<Vec<String>, String> = items.iter().map(scalar).collect();
            Ok(Some(parts?.join(",")))
        }
        (Kind::Value, other) => scalar(&other).map(Some),
    }
}

/// A section's settings become the TLS flags (`cert-file`, `peer-client-cert-auth`, ...);
/// a setting rsetcd does not act on (auto-tls, allowed-cn, ...) is refused when set.
fn tls_section(section: &str, value: Value) -> Result<Vec<(&'static str, String)>, String> {
    let entries = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(entries) => entries,
        other => return Err(format!("expected a mapping, found {}", kind_of(&other))),
    };
    let mut flags = Vec::new();
    for (key, value) in entries {
        let key = key.as_str().unwrap_or_default().to_string();
        if !TLS_KEYS.contains(&key.as_str()) {
            return Err(format!("unknown key {key:?} in {section}"));
        }
        let text = match &value {
            Value::Null => continue,
            Value::Bool(b) => b.to_string(),
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => s.clone(),
            other => {
                return Err(format!("{key}: expected a single value, found {}", kind_of(other)))
            }
        };
        let flag = match (section, key.as_str()) {
            ("client-transport-security", "cert-file") => "cert-file",
            ("client-transport-security", "key-file") => "key-file",
            ("client-transport-security", "trusted-ca-file") => "trusted-ca-file",
            ("client-transport-security", "client-cert-auth") => "client-cert-auth",
            ("peer-transport-security", "cert-file") => "peer-cert-file",
            ("peer-transport-security", "key-file") => "peer-key-file",
            ("peer-transport-security", "trusted-ca-file") => "peer-trusted-ca-file",
            ("peer-transport-security", "client-cert-auth") => "peer-client-cert-auth",
            _ if text == "false" => continue,
            _ => return Err(format!("{key} is set, but rsetcd does not serve it yet")),
        };
        flags.push((flag, text));
    }
    Ok(flags)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FLAGS;

    fn load_text(text: &str) -> Result<BTreeMap<&'static str, String>, FileError> {
        let path = std::env::temp_dir().join(format!(
            "rsetcd-config-{}-{}.yml",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path, FLAGS);
        let _ = std::fs::remove_file(&path);
        loaded
    }

    #[test]
    fn settings_become_flag_texts() {
        let values = load_text(
            "name: m1\nheartbeat-interval: 100\nstrict-reconfig-check: true\n\
             log-outputs: [stderr, stdout]\nwal-dir:\nproxy: 'off'\n\
             experimental-snapshot-catch-up-entries: 50\n\
             client-transport-security:\n  cert-file:\n  client-cert-auth: false\n",
        )
        .unwrap();
        assert_eq!(values["name"], "m1");
        assert_eq!(values["heartbeat-interval"], "100");
        assert_eq!(values["strict-reconfig-check"], "true");
        assert_eq!(values["log-outputs"], "stderr,stdout");
        assert_eq!(values["experimental-snapshot-catchup-entries"], "50");
        assert!(!values.contains_key("wal-dir"));
    }

    #[test]
    fn mistakes_name_the_key() {
        let err = load_text("heartbeat-intervall: 100\n").unwrap_err().to_string();
        assert!(err.contains("unknown key \"heartbeat-intervall\""), "{err}");
        let err = load_text("strict-reconfig-check: yes please\n").unwrap_err().to_string();
        assert!(err.contains("\"strict-reconfig-check\": expected true or false"), "{err}");
        let err = load_text("name: [a, [b]]\n").unwrap_err().to_string();
        assert!(err.contains("\"name\""), "{err}");
        let values = load_text("client-transport-security:\n  cert-file: /x.pem\n").unwrap();
        assert_eq!(values["cert-file"], "/x.pem");
        let err = load_text("peer-transport-security:\n  auto-tls: true\n").unwrap_err();
        assert!(err.to_string().contains("does not serve it yet"), "{err}");
        let err = load_text("name: [unclosed\n").unwrap_err().to_string();
        assert!(err.starts_with("config file "), "{err}");
    }
}

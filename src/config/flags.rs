//! Command-line parsing with Go's `flag` rules, which etcd users' scripts rely on: `-x` and
//! `--x` are the same, a value follows `=` or comes as the next word, booleans stand alone
//! (`--b` or `--b=false`), a repeated flag's last value wins, and parsing stops at the first
//! word that is not a flag. Flags not given are read from `ETCD_<NAME>` variables.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
}

/// One flag etcd defines. `effective: false` marks a flag rsetcd accepts for compatibility
/// but does not act on yet; start-up warns when one is set.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub effective: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {value:?} for -{flag}")]
    BadBool { flag: String, value: String },
    #[error("{0:?} is not a valid flag")]
    Positional(String),
    #[error(
        "conflicting environment variable {0:?} is shadowed by corresponding command-line flag \
         (either unset environment variable or disable flag)"
    )]
    EnvConflict(String),
}

/// Where each given flag's value came from, after the command line and the environment.
#[derive(Debug, Default)]
pub struct Parsed {
    pub values: BTreeMap<&'static str, String>,
    /// `ETCD_*` variables that name no flag (etcd warns about them).
    pub unknown_env: Vec<String>,
}

pub fn parse(
    specs: &[FlagSpec],
    args: &[String],
    env: &[(String, String)],
) -> Result<Parsed, FlagError> {
    let find = |name: &str| specs.iter().find(|s| s.name == name);
    let mut parsed = Parsed::default();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            if let Some(rest) = words.next() {
                return Err(FlagError::Positional(rest.clone()));
            }
            break;
        }
        let Some(body) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else {
            return Err(FlagError::Positional(word.clone()));
        };
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::Unknown(body.to_string()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let spec = find(name).ok_or_else(|| FlagError::Unknown(name.to_string()))?;
        let value = match (spec.kind, inline) {
            (Kind::Bool, Some(v)) => normalize_bool(name, &v)?,
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Value, Some(v)) => v,
            (Kind::Value, None) => {
                words.next().cloned().ok_or_else(|| FlagError::MissingValue(name.to_string()))?
            }
        };
        parsed.values.insert(spec.name, value);
    }

    for (var, value) in env {
        let Some(rest) = var.strip_prefix("ETCD_") else {
            continue;
        };
        let name = rest.to_ascii_lowercase().replace('_', "-");
        match find(&name) {
            Some(spec) if parsed.values.contains_key(spec.name) => {
                return Err(FlagError::EnvConflict(var.clone()));
            }
            Some(spec) => {
                let value = match spec.kind {
                    Kind::Bool => normalize_bool(spec.name, value)?,
                    Kind::Value => value.clone(),
                };
                parsed.values.insert(spec.name, value);
            }
            None => parsed.unknown_env.push(var.clone()),
        }
    }
    Ok(parsed)
}

/// Go's strconv.ParseBool spellings.
fn normalize_bool(flag: &str, value: &str) -> Result<String, FlagError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok("true".into()),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok("false".into()),
        _ => Err(FlagError::BadBool { flag: flag.to_string(), value: value.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[FlagSpec] = &[
        FlagSpec { name: "name", kind: Kind::Value, effective: true },
        FlagSpec { name: "debug", kind: Kind::Bool, effective: true },
        FlagSpec { name: "initial-cluster-token", kind: Kind::Value, effective: true },
    ];

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn go_flag_spellings() {
        let p = parse(SPECS, &args(&["-name", "a", "--debug", "--name=b"]), &[]).unwrap();
        assert_eq!(p.values["name"], "b");
        assert_eq!(p.values["debug"], "true");
        let p = parse(SPECS, &args(&["--debug=false"]), &[]).unwrap();
        assert_eq!(p.values["debug"], "false");
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            parse(SPECS, &args(&["--nope"]), &[]).unwrap_err(),
            FlagError::Unknown("nope".into())
        );
        assert_eq!(
            parse(SPECS, &args(&["--name"]), &[]).unwrap_err(),
            FlagError::MissingValue("name".into())
        );
        assert_eq!(
            parse(SPECS, &args(&["stray"]), &[]).unwrap_err(),
            FlagError::Positional("stray".into())
        );
    }

    #[test]
    fn environment_fills_gaps_and_conflicts_with_flags() {
        let env = vec![
            ("ETCD_INITIAL_CLUSTER_TOKEN".to_string(), "t".to_string()),
            ("ETCD_UNHEARD_OF".to_string(), "x".to_string()),
        ];
        let p = parse(SPECS, &[], &env).unwrap();
        assert_eq!(p.values["initial-cluster-token"], "t");
        assert_eq!(p.unknown_env, vec!["ETCD_UNHEARD_OF".to_string()]);
        let err = parse(SPECS, &args(&["--initial-cluster-token=u"]), &env).unwrap_err();
        assert_eq!(err, FlagError::EnvConflict("ETCD_INITIAL_CLUSTER_TOKEN".into()));
    }
}

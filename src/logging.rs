//! Log lines shaped like etcd's zap JSON output, one object per line:
//! `{"level":"info","ts":"2026-01-02T15:04:05.000000Z","caller":"rsetcd::boot","msg":"..."}`
//! plus the event's fields. Scripts grep these (e.g. `ready to serve client requests`).

use std::fmt;

use serde_json::{Map, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

const TS_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

pub struct ZapJson;

impl<S, N> FormatEvent<S, N> for ZapJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("level".into(), Value::from(level_name(*meta.level())));
        let ts = time::OffsetDateTime::now_utc().format(TS_FORMAT).unwrap_or_default();
        line.insert("ts".into(), Value::from(ts));
        let caller = match (meta.file(), meta.line()) {
            (Some(file), Some(no)) => format!("{}:{no}", file.trim_start_matches("src/")),
            _ => meta.target().to_string(),
        };
        line.insert("caller".into(), Value::from(caller));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        line.insert("msg".into(), fields.0.remove("message").unwrap_or(Value::from("")));
        line.extend(fields.0);
        writeln!(writer, "{}", Value::Object(line))
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

/// Where log lines go (etcd's `--log-outputs`): `stderr` (also `default`), `stdout`, and
/// files, appended to; every line goes to each of them.
#[derive(Clone, Default)]
pub struct Outputs {
    stderr: bool,
    stdout: bool,
    files: Vec<std::sync::Arc<std::sync::Mutex<std::fs::File>>>,
}

impl Outputs {
    pub fn open(names: &[String]) -> std::io::Result<Outputs> {
        let mut outputs = Outputs::default();
        for name in names {
            match name.as_str() {
                "default" | "stderr" => outputs.stderr = true,
                "stdout" => outputs.stdout = true,
                path => {
                    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                    outputs.files.push(std::sync::Arc::new(std::sync::Mutex::new(file)));
                }
            }
        }
        Ok(outputs)
    }
}

impl std::io::Write for Outputs {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.stderr {
            std::io::stderr().write_all(line)?;
        }
        if self.stdout {
            std::io::stdout().write_all(line)?;
        }
        for file in &self.files {
            file.lock().unwrap_or_else(|p| p.into_inner()).write_all(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Outputs {
    type Writer = Outputs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the JSON logger at etcd's `--log-level` (panic and fatal log errors) on
/// `outputs`.
pub fn init(log_level: &str, outputs: Outputs) {
    let level = match log_level {
        "debug" => Level::DEBUG,
        "warn" => Level::WARN,
        "error" | "panic" | "fatal" => Level::ERROR,
        _ => Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(outputs)
        .with_ansi(false)
        .event_format(ZapJson)
        .try_init();
}

//! One tracing setup for every binary and test: `EnvFilter`, pretty or JSON output.

use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `pretty` or `json`"
            )),
        }
    }
}

/// A layer added beside the log lines (the gateway's span export), with its
/// own filter.
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. `RUST_LOG` wins over `default_filter`.
/// Calling it twice (as tests do) keeps the first subscriber.
pub fn init(format: LogFormat, default_filter: &str) {
    init_with(format, default_filter, None);
}

/// [`init`], with `extra` beside the log lines: the filter then applies to
/// the log lines alone, and `extra` sees what its own filter lets through.
pub fn init_with(format: LogFormat, default_filter: &str, extra: Option<ExtraLayer>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // yup-oauth2 (Vertex AI's tokens) logs tokens and token answers at
    // debug level: never more than its warnings, whatever RUST_LOG says.
    let filter = match "yup_oauth2=warn".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    if let Some(extra) = extra {
        let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let lines: ExtraLayer = match format {
            LogFormat::Pretty => lines.with_filter(filter).boxed(),
            LogFormat::Json => lines.json().flatten_event(true).with_filter(filter).boxed(),
        };
        let _ = tracing_subscriber::registry()
            .with(vec![lines, extra])
            .try_init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

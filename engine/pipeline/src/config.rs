//! The engine's one config file (`riskd.toml`), with documented defaults and
//! environment overrides.
//!
//! Every key can be overridden by an environment variable named
//! `RISKD_<SECTION>_<KEY>` in upper case, e.g. `RISKD_KAFKA_BROKERS` or
//! `RISKD_HTTP_LISTEN`. Values are parsed as the key's type (lists are
//! comma-separated). Unknown keys, in the file or in `RISKD_*` variables,
//! are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: EngineConfig,
    pub pii: PiiConfig,
    pub kafka: KafkaConfig,
    pub http: HttpConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Directory of feature definitions.
    pub features_dir: PathBuf,
    /// Directory of the rule chain, rule files and `lists/`.
    pub rules_dir: PathBuf,
    /// Model directories (each with a `manifest.toml`).
    pub models: Vec<PathBuf>,
    /// Events larger than this are dead-lettered as `oversize`.
    pub max_event_bytes: usize,
    /// Adverse reason codes reported per scored event.
    pub reason_codes: usize,
    /// Include the feature values used in each decision.
    pub include_features: bool,
    /// While serving, the rules directory is checked for changes this often
    /// (0: only on SIGHUP). A change is put in force only if it compiles and
    /// its analyst tests pass.
    pub rules_reload_interval_ms: u64,
    /// How often the model directories are polled for a new model version,
    /// milliseconds (0: only on SIGHUP). A new version is put in force only
    /// if it loads and validates.
    pub models_reload_interval_ms: u64,
    /// Directory for feature-state checkpoints (one file, `state.ckpt`).
    /// Empty: no checkpoints, and a restart begins with empty feature state.
    pub state_dir: PathBuf,
    /// While serving, feature state and the input offsets it reflects are
    /// checkpointed this often (and at shutdown).
    pub checkpoint_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    /// Key file (HMAC and encryption keys). Keep it out of the config
    /// directory and out of version control. `RISKD_PII_KEY_FILE` overrides.
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, e.g. `127.0.0.1:9092`. Empty: `serve` refuses to
    /// start; `demo` starts a local broker.
    pub brokers: String,
    pub group_id: String,
    pub input_topics: Vec<String>,
    pub decision_topic: String,
    pub dead_letter_topic: String,
    /// Consumer `fetch.wait.max.ms`: the broker may hold a fetch this long.
    pub fetch_wait_max_ms: u32,
    /// Producer `linger.ms`: how long a decision may wait to share a
    /// produce request with the next ones (0 sends each at once).
    pub linger_ms: u32,
    /// Offsets of acknowledged outputs are committed this often.
    pub commit_interval_ms: u32,
    /// Most messages decided but not yet acknowledged before consumption pauses.
    pub max_in_flight: usize,
    /// Extra librdkafka properties, passed through as-is.
    pub client: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the ops endpoints (`/metrics`, `/healthz`, `/readyz`, and
    /// the admin endpoints `/status`, `/admin/reload`). Loopback by default;
    /// empty disables it.
    pub listen: String,
    /// File holding the bearer token the admin endpoints require (see
    /// docs/security.md). Keep it apart from the config, like the key file.
    /// The `RISKD_ADMIN_TOKEN` variable, when set, holds the token itself
    /// and wins. No token: the admin endpoints are off.
    pub admin_token_file: PathBuf,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            features_dir: "features".into(),
            rules_dir: "rules".into(),
            models: vec!["models/a_card".into()],
            max_event_bytes: 64 * 1024,
            reason_codes: 3,
            include_features: false,
            rules_reload_interval_ms: 2000,
            models_reload_interval_ms: 2000,
            state_dir: ".riskd/state".into(),
            checkpoint_interval_ms: 10_000,
        }
    }
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig { key_file: ".riskd/keys.toml".into() }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            group_id: "riskd".into(),
            input_topics: vec!["risk.events".into()],
            decision_topic: "risk.decisions".into(),
            dead_letter_topic: "risk.dead-letters".into(),
            fetch_wait_max_ms: 2,
            linger_ms: 5,
            commit_interval_ms: 200,
            max_in_flight: 10_000,
            client: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:9464".into(), admin_token_file: ".riskd/admin-token".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{col}: {message}")]
    Parse { path: String, line: usize, col: usize, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// `RISKD_*` variables that are not config keys: the config path itself, the
/// log filter, the admin token (a secret, kept out of the config), the
/// setup script's tool locations, and the fuzzing time of scripts/test.sh.
pub const NOT_CONFIG: &[&str] =
    &["CONFIG", "LOG", "ADMIN_TOKEN", "TANSU", "TOOLS_ROOT", "TANSU_VERSION", "FUZZ_SECONDS"];

impl Config {
    /// Reads the file (if given), applies `RISKD_*` overrides from `env`,
    /// and validates the result. Relative paths are kept relative to the
    /// working directory.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let shown = path.map_or("<defaults>".to_string(), |p| p.display().to_string());
        let text = match path {
            Some(p) => {
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: shown.clone(), source })?
            }
            None => String::new(),
        };
        let mut doc: toml::Table = toml::from_str(&text).map_err(|e| parse_error(&shown, &text, e))?;
        let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("RISKD_") else { continue };
            if NOT_CONFIG.contains(&rest) {
                continue; // the binary's and the tooling's own variables, not config keys
            }
            apply_env(&mut doc, &defaults, &var, rest, &value)?;
        }
        let cfg: Config = Config::deserialize(toml::Value::Table(doc.clone())).map_err(|e| {
            // Re-parse the text alone for a position when the file is at fault.
            match toml::from_str::<Config>(&text) {
                Err(fe) => parse_error(&shown, &text, fe),
                Ok(_) => ConfigError::Invalid { path: shown.clone(), message: e.message().to_string() },
            }
        })?;
        cfg.validate(&shown)?;
        Ok(cfg)
    }

    fn validate(&self, shown: &str) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid { path: shown.to_string(), message: m });
        if self.engine.max_event_bytes < 256 {
            return bad(format!(
                "engine.max_event_bytes = {} is too small (at least 256)",
                self.engine.max_event_bytes
            ));
        }
        if self.engine.reason_codes > 10 {
            return bad("engine.reason_codes must be at most 10".into());
        }
        let k = &self.kafka;
        if k.input_topics.is_empty() {
            return bad("kafka.input_topics must name at least one topic".into());
        }
        for t in k.input_topics.iter().chain([&k.decision_topic, &k.dead_letter_topic]) {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                return bad(format!("kafka topic name `{t}` is not valid (letters, digits, . _ -)"));
            }
        }
        if k.input_topics.iter().any(|t| *t == k.decision_topic || *t == k.dead_letter_topic) {
            return bad("kafka.decision_topic and kafka.dead_letter_topic must differ from the input topics".into());
        }
        if k.max_in_flight == 0 {
            return bad("kafka.max_in_flight must be at least 1".into());
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!("http.listen = `{}` is not an address like 127.0.0.1:9464", self.http.listen));
        }
        Ok(())
    }
}

fn parse_error(path: &str, text: &str, e: toml::de::Error) -> ConfigError {
    let (line, col) = e.span().map_or((0, 0), |s| riskd_core::text::line_col(text, s.start));
    ConfigError::Parse { path: path.to_string(), line, col, message: e.message().to_string() }
}

fn apply_env(
    doc: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    rest: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let lower = rest.to_ascii_lowercase();
    let env_err = |m: String| ConfigError::Env { var: var.to_string(), message: m };
    for (section, fields) in defaults {
        let Some(key) = lower.strip_prefix(&format!("{section}_")) else { continue };
        let Some(template) = fields.as_table().and_then(|t| t.get(key)) else { continue };
        let parsed = match template {
            toml::Value::String(_) => toml::Value::String(value.to_string()),
            toml::Value::Integer(_) => {
                toml::Value::Integer(value.parse().map_err(|_| env_err(format!("`{value}` is not an integer")))?)
            }
            toml::Value::Boolean(_) => {
                toml::Value::Boolean(value.parse().map_err(|_| env_err(format!("`{value}` is not true or false")))?)
            }
            toml::Value::Array(_) => toml::Value::Array(
                value
                    .split(',')
                    .map(|s| toml::Value::String(s.trim().to_string()))
                    .filter(|v| v.as_str() != Some(""))
                    .collect(),
            ),
            _ => return Err(env_err("this key cannot be set from the environment".into())),
        };
        let table = doc.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = table {
            t.insert(key.to_string(), parsed);
        }
        return Ok(());
    }
    Err(env_err("no such config key (expected RISKD_<SECTION>_<KEY>, e.g. RISKD_KAFKA_BROKERS)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("riskd.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(Some(&p), env.iter().map(|(a, b)| (a.to_string(), b.to_string()))).map_err(|e| match e {
            ConfigError::Parse { line, col, message, .. } => {
                ConfigError::Parse { path: "riskd.toml".into(), line, col, message }
            }
            ConfigError::Invalid { message, .. } => ConfigError::Invalid { path: "riskd.toml".into(), message },
            other => other,
        })
    }

    #[test]
    fn defaults_and_env_overrides() {
        let cfg = load(
            "[kafka]\nbrokers = \"a:1\"\n",
            &[
                ("RISKD_CONFIG", "elsewhere.toml"),
                ("RISKD_LOG", "debug"),
                ("RISKD_KAFKA_GROUP_ID", "g2"),
                ("RISKD_KAFKA_INPUT_TOPICS", "x, y"),
                ("RISKD_ENGINE_REASON_CODES", "2"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.kafka.brokers, "a:1");
        assert_eq!(cfg.kafka.group_id, "g2");
        assert_eq!(cfg.kafka.input_topics, vec!["x", "y"]);
        assert_eq!(cfg.engine.reason_codes, 2);
        assert_eq!(cfg.kafka.linger_ms, 5);
    }

    #[test]
    fn broken_configs_are_refused_precisely() {
        let e = load("[kafka]\nbrokers = \"a:1\"\nlinger = 5\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("riskd.toml:3:1: unknown field `linger`"), "{e}");
        let e = load("[engine]\nmax_event_bytes = \"big\"\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("riskd.toml:2:19:") && e.contains("invalid type"), "{e}");
        let e = load("[kafka]\ndecision_topic = \"risk.events\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("must differ from the input topics"), "{e}");
        let e = load("", &[("RISKD_KAFKA_BROKER", "x")]).unwrap_err().to_string();
        assert!(e.contains("RISKD_KAFKA_BROKER: no such config key"), "{e}");
        let e = load("", &[("RISKD_ENGINE_REASON_CODES", "many")]).unwrap_err().to_string();
        assert!(e.contains("`many` is not an integer"), "{e}");
        let e = load("[http]\nlisten = \"nowhere\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("http.listen = `nowhere`"), "{e}");
    }
}

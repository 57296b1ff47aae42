//! Layering of configuration sources with the `config` crate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};

use super::{Settings, ValidationError};
use crate::kafka::OPTION_VARIABLE_PREFIX;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist; pass an existing file to --config")]
    MissingFile { path: PathBuf },
    #[error(
        "configuration is not valid: {message}\n  fix: check the key's spelling and type against config/default.toml (every key is documented there)"
    )]
    Parse { message: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Loads settings from code defaults, an optional file and the process environment
/// (`TRIAGE__SECTION__KEY=value`), then validates them.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_with_env(file, std::env::vars().collect())
}

/// Like [`load`], with the environment given explicitly (tests use this).
pub fn load_with_env(
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    let mut defaults = Settings::default();
    if let Some(dir) = env.get("TRIAGE_CACHE_DIR").filter(|d| !d.is_empty()) {
        defaults.paths.cache_dir = PathBuf::from(dir);
    }
    let parse = |e: config::ConfigError| ConfigError::Parse {
        message: e.to_string(),
    };

    let mut builder = Config::builder().add_source(Config::try_from(&defaults).map_err(parse)?);
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml));
    }
    // Only variables with the double-underscore form are settings; TRIAGE_CACHE_DIR
    // and friends are read above. A librdkafka property's key has dots, which the
    // config crate would read as nesting: those variables are applied below.
    let (options, triage_vars): (Vec<_>, Vec<_>) = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("TRIAGE__"))
        .partition(|(k, _)| k.starts_with(OPTION_VARIABLE_PREFIX));
    let triage_vars: config::Map<String, String> = triage_vars.into_iter().collect();
    builder = builder.add_source(
        Environment::with_prefix("TRIAGE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("labels.allowed")
            .with_list_parse_key("kafka.input_topics")
            .with_list_parse_key("retrain.alerts")
            .source(Some(triage_vars)),
    );

    let mut settings: Settings = builder
        .build()
        .map_err(parse)?
        .try_deserialize()
        .map_err(parse)?;
    for (name, value) in options {
        let key = name[OPTION_VARIABLE_PREFIX.len()..].to_ascii_lowercase();
        settings.kafka.librdkafka_options.insert(key, value);
    }
    settings.validate()?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn documented_default_file_matches_code_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let from_file = load_with_env(Some(&path), HashMap::new()).unwrap();
        assert_eq!(from_file, Settings::default());
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let file = write("[training]\nalphas = [2.5]\nseed = 7\n");
        let settings = load_with_env(
            Some(file.path()),
            env(&[
                ("TRIAGE__TRAINING__SEED", "9"),
                ("TRIAGE__LOG__FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.training.alphas, vec![2.5]);
        assert_eq!(settings.training.seed, 9);
        assert_eq!(settings.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let file = write("[training]\nalpah = 2.5\n");
        let err = load_with_env(Some(file.path()), HashMap::new()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("alpah"), "{text}");
        assert!(text.contains("default.toml"), "{text}");
    }

    #[test]
    fn unknown_section_in_environment_is_named() {
        let err = load_with_env(None, env(&[("TRIAGE__TRAINIGN__SEED", "1")])).unwrap_err();
        assert!(err.to_string().contains("trainign"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let file = write("[embedding]\nmax_length = \"long\"\n");
        let err = load_with_env(Some(file.path()), HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("max_length"), "{err}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let err =
            load_with_env(Some(Path::new("/nonexistent/triage.toml")), HashMap::new()).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
        assert!(err.to_string().contains("/nonexistent/triage.toml"));
    }

    #[test]
    fn cache_dir_variable_sets_the_default() {
        let settings = load_with_env(None, env(&[("TRIAGE_CACHE_DIR", "/tmp/tc")])).unwrap();
        assert_eq!(settings.cache_dir(), PathBuf::from("/tmp/tc"));
        assert_eq!(
            settings.onnx_runtime_path(),
            PathBuf::from("/tmp/tc/onnxruntime/1.31.1/libonnxruntime.so.1.31.1")
        );
    }

    #[test]
    fn retrain_token_from_environment_is_kept_but_never_printed() {
        let token = "0123456789abcdef0123456789abcdef";
        let settings = load_with_env(
            None,
            env(&[
                ("TRIAGE__RETRAIN__WEBHOOK_TOKEN", token),
                ("TRIAGE__RETRAIN__ALERTS", "TriageDriftDetected,Other"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.retrain.webhook_token.expose(), token);
        assert_eq!(
            settings.retrain.alerts,
            vec!["TriageDriftDetected", "Other"]
        );
        let printed = toml::to_string(&settings).unwrap();
        assert!(!printed.contains(token), "{printed}");
        assert!(printed.contains("webhook_token = \"***\""), "{printed}");
        assert!(!format!("{settings:?}").contains(token));
    }

    #[test]
    fn librdkafka_options_with_dotted_keys_come_from_the_environment() {
        let settings = load_with_env(
            None,
            env(&[
                (
                    "TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__ssl.key.password",
                    "s3cret",
                ),
                ("TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__FETCH.MIN.BYTES", "1"),
                ("TRIAGE__KAFKA__SASL_PASSWORD", "pw"),
            ]),
        )
        .unwrap();
        let options = &settings.kafka.librdkafka_options;
        assert_eq!(options["ssl.key.password"], "s3cret");
        assert_eq!(options["fetch.min.bytes"], "1");
        assert_eq!(settings.kafka.sasl_password, "pw");
        let printed = toml::to_string(&settings).unwrap();
        assert!(
            !printed.contains("s3cret") && !printed.contains("\"pw\""),
            "{printed}"
        );
    }

    #[test]
    fn list_from_environment_is_split_on_commas() {
        let settings = load_with_env(
            None,
            env(&[
                ("TRIAGE__LABELS__RULE", "column"),
                ("TRIAGE__LABELS__ALLOWED", "billing,refund"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.labels.allowed, vec!["billing", "refund"]);
    }
}

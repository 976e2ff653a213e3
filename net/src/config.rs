//! Loading TOML config files with errors that name the file, the key and
//! what was expected.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config (the parser's message names the
    /// key, line and column).
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's explanation, with the place in the file.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{source_name}: key `{key}` {message}")]
    Invalid {
        /// The file, or "command line".
        source_name: String,
        /// The dotted key.
        key: &'static str,
        /// What is wrong and what to write.
        message: String,
    },
}

/// Parses `text` (from `path`, for messages) as `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    basic_toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// The keys `T` takes that `example`, a printed default configuration,
/// neither sets nor shows in a comment (`# KEY =`, or a table header
/// naming it), as dotted names: what `print-config` would not tell. Each
/// of the example's tables is probed with a key no configuration has; the
/// parser's refusal lists the keys that table takes. For tests.
pub fn unprinted_keys<T: DeserializeOwned>(example: &str) -> Result<Vec<String>, String> {
    let tree: serde_json::Value =
        basic_toml::from_str(example).map_err(|e| format!("the example: {e}"))?;
    let dotted = |path: &str, key: &str| match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    };
    let mut missing = Vec::new();
    let mut tables = vec![(String::new(), &tree)];
    while let Some((path, table)) = tables.pop() {
        let Some(map) = table.as_object() else {
            continue;
        };
        let probe = match path.as_str() {
            "" => "zz_probe = 1\n".to_string(),
            _ => format!("[{path}]\nzz_probe = 1\n"),
        };
        let refusal = match basic_toml::from_str::<T>(&probe) {
            Ok(_) => return Err(format!("[{path}] takes any key: nothing to compare")),
            Err(e) => e.to_string(),
        };
        let listed = refusal
            .split_once("expected")
            .map_or("", |(_, rest)| rest)
            .split(" for key `")
            .next()
            .unwrap_or_default();
        let taken = listed.split('`').skip(1).step_by(2);
        for key in taken {
            let name = dotted(&path, key);
            let shown = map.contains_key(key)
                || example.contains(&format!("# {key} ="))
                || example.contains(&format!("[{name}"));
            if !shown {
                missing.push(name);
            }
        }
        for (key, value) in map {
            tables.push((dotted(&path, key), value));
        }
    }
    missing.sort();
    Ok(missing)
}

/// Reads and parses a config file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

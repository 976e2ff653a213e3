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

/// Reads and parses a config file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

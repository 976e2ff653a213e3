//! The HTTP side's bearer tokens: each in a file of its own, one word. A
//! file the configuration names that does not exist yet is made at the
//! hub's first start (mode 600, like `hub.key`), so that a hub's HTTP side
//! is closed to the other users of its machine from the start, with no
//! step to forget (the packaged hub names both).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::HttpError;

/// Longest token file read: a token is one line.
const TOKEN_FILE_MAX: u64 = 4096;
/// Shortest token accepted.
const TOKEN_MIN: usize = 16;
/// Random bytes in a token the hub makes: 256 bits, 43 characters.
const MADE_BYTES: usize = 32;

/// A token file as the hub found it before it started.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenFile {
    /// It holds this token.
    Held(String),
    /// There is no such file yet: [`TokenFile::token`] makes it.
    Missing(PathBuf),
}

impl TokenFile {
    /// Reads `path`: its token, or [`TokenFile::Missing`] when there is no
    /// file (which is no error: the hub makes it at start).
    pub fn read(path: &Path) -> Result<TokenFile, HttpError> {
        match read_token(path) {
            Ok(token) => Ok(TokenFile::Held(token)),
            Err(_)
                if path
                    .symlink_metadata()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                Ok(TokenFile::Missing(path.to_path_buf()))
            }
            Err(e) => Err(e),
        }
    }

    /// The token, written first to a new file of mode 600 when there was
    /// none (said in the hub's log with the file's name). A file another
    /// process wrote in the meantime is read instead.
    pub fn token(self) -> Result<(String, Option<PathBuf>), HttpError> {
        let path = match self {
            TokenFile::Held(token) => return Ok((token, None)),
            TokenFile::Missing(path) => path,
        };
        let err = |why: String| HttpError::Token {
            path: path.clone(),
            why,
        };
        let mut bytes = [0u8; MADE_BYTES];
        fleetmq_net::random::fill(&mut bytes)
            .map_err(|e| err(format!("reading /dev/urandom to make one: {e}")))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match file {
            Ok(mut f) => {
                f.write_all(format!("{token}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(format!("writing a new token: {e}")))?;
                Ok((token, Some(path)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((read_token(&path)?, None))
            }
            Err(e) => Err(err(format!(
                "there is none, and one could not be made ({e}): make the file (head -c 32 /dev/urandom | base64 > FILE), or set the key to another path"
            ))),
        }
    }
}

/// Reads the bearer token from `path`: one line of at least 16 characters.
pub fn read_token(path: &Path) -> Result<String, HttpError> {
    let err = |why: String| HttpError::Token {
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut text = String::new();
    file.take(TOKEN_FILE_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > TOKEN_FILE_MAX {
        return Err(err(format!(
            "is over {TOKEN_FILE_MAX} bytes; a token is one line"
        )));
    }
    let token = text.trim();
    if token.len() < TOKEN_MIN || token.contains(char::is_whitespace) {
        return Err(err(format!(
            "must hold one word of at least {TOKEN_MIN} characters (head -c 32 /dev/urandom | base64 > FILE)"
        )));
    }
    Ok(token.to_string())
}

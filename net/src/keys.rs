//! CURVE key files, as `keygen` writes them and both binaries read them.
//!
//! A key pair is two files in one directory: `NAME.key` holds the secret key
//! and is created with mode 0600; `NAME.pub` holds the public key. Each is
//! one line: the key in Z85 (ZeroMQ's text encoding, 40 characters for 32
//! bytes), the form `zmq_curve_keypair` produces and CURVE options accept.
//! Existing files are never replaced unless the caller says so, because a
//! new key pair locks out every peer that trusted the old public key.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Length of a Z85-encoded CURVE key.
pub const Z85_LEN: usize = 40;

/// The 85 characters of Z85 (ZeroMQ RFC 32).
const Z85_CHARS: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{0} already exists; refusing to replace it (peers that trust its public key would be locked out). Pass --force to replace it"
    )]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {why}; expected one line of {Z85_LEN} Z85 characters, as `keygen` writes")]
    Malformed { path: PathBuf, why: String },
    #[error(
        "generating a CURVE key pair: {0} (is this libzmq built with CURVE? `fleetmq-agent info` checks)"
    )]
    Generate(zmq::Error),
    #[error(
        "{given:?} is neither a public key ({why}) nor a file; give the Z85 line in single quotes, or the path of that file (a .pub)"
    )]
    NeitherKeyNorFile { given: String, why: String },
}

/// A CURVE key pair in Z85.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub public: String,
    pub secret: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret key by accident.
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Where `NAME`'s key files live in `dir`: (secret, public).
pub fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// `key` as it should be printed for a person to paste: in single quotes.
/// Z85 holds `$`, `!`, `&`, `<`, `>`, `(`, `)`, `^` and `=`, which a shell
/// would act on (double quotes do not protect `$` and `!`), and no quote of
/// its own, so single quotes keep it whole in a shell and in TOML (a
/// literal string).
pub fn quoted(key: &str) -> String {
    format!("'{key}'")
}

/// A raw 32-byte CURVE key in Z85, as keys are written and enrolled;
/// `None` for anything that is not 32 bytes.
pub fn z85(raw: &[u8]) -> Option<String> {
    if raw.len() != 32 {
        return None;
    }
    zmq::z85_encode(raw).ok()
}

/// A fresh key pair from libzmq (libsodium's random source).
pub fn generate() -> Result<KeyPair, KeyError> {
    let pair = zmq::CurveKeyPair::new().map_err(KeyError::Generate)?;
    let encode = |k: &[u8]| zmq::z85_encode(k).unwrap_or_default();
    Ok(KeyPair {
        public: encode(&pair.public_key),
        secret: encode(&pair.secret_key),
    })
}

/// Writes `pair` as `NAME.key` (mode 0600) and `NAME.pub` in `dir`, which is
/// created if missing. Fails if either file exists, unless `force`.
pub fn write(
    dir: &Path,
    name: &str,
    pair: &KeyPair,
    force: bool,
) -> Result<(PathBuf, PathBuf), KeyError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let (secret, public) = paths(dir, name);
    if !force {
        for p in [&secret, &public] {
            if p.exists() {
                return Err(KeyError::Exists(p.clone()));
            }
        }
    }
    write_file(&secret, &pair.secret, 0o600).map_err(io_err(&secret))?;
    write_file(&public, &pair.public, 0o644).map_err(io_err(&public))?;
    Ok((secret, public))
}

/// Writes `line` with `mode`, whole, so a reader never sees half a key.
fn write_file(path: &Path, line: &str, mode: u32) -> io::Result<()> {
    crate::files::write_atomically(path, format!("{line}\n").as_bytes(), Some(mode))
}

/// Checks that `key` is a Z85 CURVE key (40 characters decoding to 32
/// bytes); the error says what is wrong with it.
pub fn check(key: &str) -> Result<(), String> {
    if key.len() != Z85_LEN {
        return Err(format!(
            "{} characters where a key has {Z85_LEN}",
            key.chars().count()
        ));
    }
    if let Some(c) = key.chars().find(|c| !Z85_CHARS.contains(*c)) {
        return Err(format!("{c:?} is not a Z85 character"));
    }
    match zmq::z85_decode(key) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        Ok(bytes) => Err(format!("decodes to {} bytes, not 32", bytes.len())),
        Err(e) => Err(format!("not Z85 ({e:?})")),
    }
}

/// Reads one Z85 key from `path` and checks that it decodes to 32 bytes.
pub fn read(path: &Path) -> Result<String, KeyError> {
    let text = crate::files::read_capped(path, KEY_FILE_MAX).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let key = text.trim();
    check(key).map_err(|why| KeyError::Malformed {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(key.to_string())
}

/// The most a key file may hold: one 40-character line, and room for a
/// comment or two.
pub const KEY_FILE_MAX: u64 = 4096;

/// A public key as a person gives it: its Z85 line, or the path of a
/// `.pub` file holding it. A file that exists wins: a path can be 40
/// characters that are all Z85 (`/tmp/fleetmq-cluster.8bsPgn/fe-a/hub.pub`).
pub fn key_or_file(given: &str) -> Result<String, KeyError> {
    let path = Path::new(given);
    if path.is_file() {
        return read(path);
    }
    let why = match check(given) {
        Ok(()) => return Ok(given.to_string()),
        Err(why) => why,
    };
    Err(KeyError::NeitherKeyNorFile {
        given: given.to_string(),
        why,
    })
}

/// `NAME`'s key pair from `dir`, made and written first if there is none
/// yet (the way SSH makes host keys). The flag says whether it was made now.
pub fn load_or_create(dir: &Path, name: &str) -> Result<(KeyPair, bool), KeyError> {
    if let Some(pair) = load(dir, name)? {
        return Ok((pair, false));
    }
    let pair = generate()?;
    write(dir, name, &pair, false)?;
    Ok((pair, true))
}

/// `NAME`'s key pair from `dir`, checked as [`load_or_create`] checks it;
/// `None` when there is none yet.
pub fn load(dir: &Path, name: &str) -> Result<Option<KeyPair>, KeyError> {
    let (secret, public) = paths(dir, name);
    if !secret.exists() {
        return Ok(None);
    }
    Ok(Some(KeyPair {
        secret: read_secret(&secret)?,
        public: read(&public)?,
    }))
}

/// Reads a secret key, refusing one that others than its owner can read:
/// a leaked device key lets anyone pose as that device.
pub fn read_secret(path: &Path) -> Result<String, KeyError> {
    let mode = fs::metadata(path)
        .map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            why: format!(
                "a secret key readable by others (mode {:o}); run chmod 600 on it",
                mode & 0o777
            ),
        });
    }
    read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_secret_and_never_overwrites_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let pair = generate().unwrap();
        let (secret, public) = write(dir.path(), "hub", &pair, false).unwrap();
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&secret).unwrap(), pair.secret);
        assert_eq!(read(&public).unwrap(), pair.public);
        assert!(!format!("{pair:?}").contains(&pair.secret));

        let other = generate().unwrap();
        let err = write(dir.path(), "hub", &other, false).unwrap_err();
        assert!(matches!(err, KeyError::Exists(_)), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(read(&public).unwrap(), pair.public, "left as it was");

        write(dir.path(), "hub", &other, true).unwrap();
        assert_eq!(read(&public).unwrap(), other.public);
    }

    #[test]
    fn a_key_is_given_as_its_line_or_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let pair = generate().unwrap();
        let (_, public) = write(dir.path(), "agent", &pair, false).unwrap();
        assert_eq!(key_or_file(&pair.public).unwrap(), pair.public);
        assert_eq!(key_or_file(public.to_str().unwrap()).unwrap(), pair.public);
        let e = key_or_file("nope.pub").unwrap_err().to_string();
        assert!(
            e.contains("neither a public key") && e.contains("nope.pub"),
            "{e}"
        );
    }

    #[test]
    fn a_path_that_happens_to_be_40_z85_characters_is_read_as_the_file() {
        // /tmp/.tmpXXXXXX/ then a name that makes it 40 characters, all Z85.
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let pair = generate().unwrap();
        let (_, public) = write(dir.path(), "hub", &pair, false).unwrap();
        let prefix = format!("{}/", dir.path().display());
        let name = format!("{prefix}{}", "x".repeat(40 - prefix.len()));
        std::fs::copy(&public, &name).unwrap();
        assert!(check(&name).is_ok(), "the path itself parses as a key");
        assert_eq!(key_or_file(&name).unwrap(), pair.public);
    }

    #[test]
    fn z85_takes_32_bytes_only() {
        // The ZeroMQ RFC 32 test vector.
        let raw = [
            0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B, 0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59,
            0xF7, 0x5B, 0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B, 0x86, 0x4F, 0xD2, 0x6F,
            0xB5, 0x59, 0xF7, 0x5B,
        ];
        assert_eq!(
            z85(&raw).as_deref(),
            Some("HelloWorldHelloWorldHelloWorldHelloWorld")
        );
        assert_eq!(z85(&raw[..31]), None);
        assert_eq!(z85(&[0; 33]), None);
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pub");
        fs::write(&p, "short\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("5 characters"));
        fs::write(&p, format!("{}\n", "~".repeat(Z85_LEN))).unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(err.contains("'~' is not a Z85 character"), "{err}");
        let err = read(&dir.path().join("missing.pub")).unwrap_err();
        assert!(err.to_string().contains("missing.pub"), "{err}");

        let pair = generate().unwrap();
        let (secret, _) = write(dir.path(), "agent", &pair, false).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&secret).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn keys_from_files_complete_a_curve_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let server = generate().unwrap();
        let client = generate().unwrap();
        write(dir.path(), "hub", &server, false).unwrap();
        write(dir.path(), "agent", &client, false).unwrap();
        let (hub_secret, hub_public) = paths(dir.path(), "hub");
        let (agent_secret, agent_public) = paths(dir.path(), "agent");

        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).unwrap();
        rep.set_curve_server(true).unwrap();
        rep.set_curve_secretkey(read_secret(&hub_secret).unwrap().as_bytes())
            .unwrap();
        rep.set_linger(0).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = rep.get_last_endpoint().unwrap().unwrap();

        let req = ctx.socket(zmq::REQ).unwrap();
        req.set_curve_serverkey(read(&hub_public).unwrap().as_bytes())
            .unwrap();
        req.set_curve_publickey(read(&agent_public).unwrap().as_bytes())
            .unwrap();
        req.set_curve_secretkey(read_secret(&agent_secret).unwrap().as_bytes())
            .unwrap();
        req.set_linger(0).unwrap();
        req.set_rcvtimeo(5_000).unwrap();
        rep.set_rcvtimeo(5_000).unwrap();
        req.connect(&endpoint).unwrap();
        req.send("hello", 0).unwrap();
        assert_eq!(rep.recv_bytes(0).unwrap(), b"hello");
        rep.send("back", 0).unwrap();
        assert_eq!(req.recv_bytes(0).unwrap(), b"back");
    }
}

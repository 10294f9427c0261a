//! Tokens: who may write readings for which devices, who may read which
//! devices' views, and how fast.
//!
//! A tokens file (TOML) lists each token by name with the SHA-256 of its
//! secret (the secret itself is shown once, by `braid token new`, and never
//! stored), what it may do (`access`: `write`, `read` or both; `write` when
//! absent), the devices it may touch (exact ids, or prefixes ending in `*`)
//! and an optional rate in readings per second:
//!
//! ```toml
//! [[tokens]]
//! name = "car-park-gateway"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! access = ["write"]
//! devices = ["lot-*"]
//! rate = 500
//! ```
//!
//! A request's `Authorization: Bearer <secret>` is hashed and compared with
//! every entry in constant time (no early exit, no timing of the match).
//! No token, an unknown one or a revoked one (`revoked = true`, set by
//! `braid token revoke`): 401. A reading for a device outside the token's
//! scope, a read of one, or an access the token lacks: 403, and nothing of
//! the request is written. Over the rate: 429 with `Retry-After`.
//!
//! A running gateway or server notices a changed file within a second
//! ([`Tokens::load`] keeps the path and looks at its modification time), so
//! a revocation needs no restart; a file that no longer parses is refused
//! with a warning and the previous tokens stay in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Write readings (the ingest routes).
    Write,
    /// Read views and comparisons (the query routes).
    Read,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Write => "write",
            Self::Read => "read",
        })
    }
}

fn write_only() -> Vec<Access> {
    vec![Access::Write]
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One token as stored.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for people and logs.
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
    /// What it may do (`write` when absent, as tokens files before read
    /// tokens had it).
    #[serde(default = "write_only")]
    pub access: Vec<Access>,
    /// Devices it may write or read: ids, or prefixes ending in `*` (`*`
    /// alone: every device).
    pub devices: Vec<String>,
    /// Readings per second it may write (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Revoked: refused with 401 like an unknown token.
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoked: bool,
}

impl TokenEntry {
    /// Whether the token may touch readings of `device`.
    pub fn allows(&self, device: &str) -> bool {
        self.devices.iter().any(|d| match d.strip_suffix('*') {
            Some(prefix) => device.starts_with(prefix),
            None => d == device,
        })
    }

    /// Whether the token covers every device (`*`).
    pub fn allows_all(&self) -> bool {
        self.devices.iter().any(|d| d == "*")
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// Why a tokens file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid tokens file.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this server needs a token: send `Authorization: Bearer <token>`")]
    Missing,
    /// A token that is not in the tokens file.
    #[error("the token is not known (mistyped, or removed from the tokens file)")]
    Unknown,
    /// A token marked revoked.
    #[error("token `{0}` was revoked")]
    Revoked(String),
    /// The token lacks the access the route needs.
    #[error("token `{token}` may not {access}: its access is {granted}")]
    NoAccess {
        /// The token's name.
        token: String,
        /// What the route needs.
        access: Access,
        /// What it has.
        granted: String,
    },
    /// A reading for a device the token may not write.
    #[error("record {record}: field `device_id`: token `{token}` may not write device `{device}`")]
    OutOfScope {
        /// The token's name.
        token: String,
        /// Index of the record.
        record: usize,
        /// The device.
        device: String,
    },
    /// A read of a device the token may not read, or of every device by a
    /// token scoped to some.
    #[error("token `{token}` may not read {what}: it may read {scope}")]
    ReadOutOfScope {
        /// The token's name.
        token: String,
        /// What was asked (`device `x``, or `every device`).
        what: String,
        /// The token's devices.
        scope: String,
    },
    /// Over the token's rate.
    #[error("token `{token}` is over its rate of {rate} readings/s: retry in {retry_after} s")]
    RateLimited {
        /// The token's name.
        token: String,
        /// Its rate.
        rate: f64,
        /// Seconds to wait.
        retry_after: u64,
    },
}

impl AuthError {
    /// Whether this refusal is about who asks (401) rather than what they
    /// may do (403, 429).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::Missing | Self::Unknown | Self::Revoked(_))
    }
}

/// The SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type Entries = Arc<Vec<(Arc<TokenEntry>, [u8; 32])>>;

/// Where the tokens came from, to notice a change.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    /// When the file was last looked at, and its (mtime, length) then.
    seen: Mutex<(Instant, Option<(SystemTime, u64)>)>,
}

/// How often a running server looks at the tokens file.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The tokens a server accepts, with each one's rate bucket.
#[derive(Debug)]
pub struct Tokens {
    entries: RwLock<Entries>,
    source: Option<Source>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Tokens {
    /// Reads a tokens file, and keeps its path to pick up changes.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let seen = stamp(path);
        let file = read_file(path)?;
        let entries = check(file).map_err(|reason| invalid(path, reason))?;
        Ok(Self {
            entries: RwLock::new(entries),
            source: Some(Source {
                path: path.to_path_buf(),
                seen: Mutex::new((Instant::now(), seen)),
            }),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Parses the text of a tokens file (fixed: no file to reload).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        Ok(Self {
            entries: RwLock::new(check(file)?),
            source: None,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Re-reads the file when it changed (looked at once a second at most).
    fn refresh(&self) {
        let Some(source) = &self.source else { return };
        let mut seen = source
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.0.elapsed() < RELOAD_EVERY {
            return;
        }
        seen.0 = Instant::now();
        let now = stamp(&source.path);
        if now == seen.1 {
            return;
        }
        seen.1 = now;
        match read_file(&source.path).and_then(|f| check(f).map_err(|r| invalid(&source.path, r))) {
            Ok(entries) => {
                tracing::info!(path = %source.path.display(), tokens = entries.len(), "tokens file changed: reloaded");
                *self
                    .entries
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = entries;
            }
            Err(e) => {
                tracing::warn!(error = %e, "tokens file changed but is refused; the previous tokens stay in force")
            }
        }
    }

    fn current(&self) -> Entries {
        self.refresh();
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The entry of the secret in an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<TokenEntry>, AuthError> {
        let secret = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found: Option<&Arc<TokenEntry>> = None;
        let entries = self.current();
        for (e, d) in entries.iter() {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        match found {
            None => Err(AuthError::Unknown),
            Some(e) if e.revoked => Err(AuthError::Revoked(e.name.clone())),
            Some(e) => Ok(e.clone()),
        }
    }

    /// Checks that `entry` has `access`.
    pub fn check_access(entry: &TokenEntry, access: Access) -> Result<(), AuthError> {
        if entry.access.contains(&access) {
            return Ok(());
        }
        Err(AuthError::NoAccess {
            token: entry.name.clone(),
            access,
            granted: entry
                .access
                .iter()
                .map(Access::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Checks that `entry` may write every device, in record order.
    pub fn check_scope<'a>(
        entry: &TokenEntry,
        devices: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), AuthError> {
        Self::check_access(entry, Access::Write)?;
        for (record, device) in devices.into_iter().enumerate() {
            if !entry.allows(device) {
                return Err(AuthError::OutOfScope {
                    token: entry.name.clone(),
                    record,
                    device: device.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Checks that `entry` may read `device` (`None`: every device).
    pub fn check_read(entry: &TokenEntry, device: Option<&str>) -> Result<(), AuthError> {
        Self::check_access(entry, Access::Read)?;
        let allowed = match device {
            Some(d) => entry.allows(d),
            None => entry.allows_all(),
        };
        if allowed {
            return Ok(());
        }
        Err(AuthError::ReadOutOfScope {
            token: entry.name.clone(),
            what: device.map_or_else(
                || "every device (name one with `device=`)".to_string(),
                |d| format!("device `{d}`"),
            ),
            scope: entry.devices.join(", "),
        })
    }

    /// Takes `n` readings from `entry`'s bucket (a second's worth of its
    /// rate, refilled continuously), or says how long to wait.
    pub fn take(&self, entry: &TokenEntry, n: usize, now: Instant) -> Result<(), AuthError> {
        let Some(rate) = entry.rate else {
            return Ok(());
        };
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (level, at) = buckets.entry(entry.name.clone()).or_insert((rate, now));
        *level = (*level + now.saturating_duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        // A request larger than the bucket passes once the bucket is full
        // and leaves it in debt, so large batches keep the average rate.
        let n = n as f64;
        let need = n.min(rate);
        if need <= *level {
            *level -= n;
            return Ok(());
        }
        let missing = need - *level;
        Err(AuthError::RateLimited {
            token: entry.name.clone(),
            rate,
            retry_after: (missing / rate).ceil().max(1.0) as u64,
        })
    }
}

/// Checks each entry of a parsed file, naming the token and field.
fn check(file: TokenFile) -> Result<Entries, String> {
    let mut entries = Vec::new();
    for (i, t) in file.tokens.into_iter().enumerate() {
        let at = |field: &str, what: &str| {
            format!("token {} (`{}`): field `{field}`: {what}", i + 1, t.name)
        };
        let digest =
            decode_hex32(&t.sha256).ok_or_else(|| at("sha256", "expected 64 hex digits"))?;
        if t.devices.is_empty() {
            return Err(at("devices", "name at least one device or prefix"));
        }
        if t.access.is_empty() {
            return Err(at("access", "give write, read or both"));
        }
        if t.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(at("rate", "must be a positive number"));
        }
        if entries
            .iter()
            .any(|(e, _): &(Arc<TokenEntry>, _)| e.name == t.name)
        {
            return Err(at("name", "another token has this name"));
        }
        entries.push((Arc::new(t), digest));
    }
    Ok(Arc::new(entries))
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn invalid(path: &Path, reason: String) -> TokensError {
    TokensError::Invalid {
        path: path.to_path_buf(),
        reason,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TokensError + '_ {
    move |source| TokensError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_file(path: &Path) -> Result<TokenFile, TokensError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    toml::from_str(&text).map_err(|e| invalid(path, e.message().to_string()))
}

/// Checks and writes `file` to `path` create-then-rename, so a running
/// server never reads half a file.
fn write_file(path: &Path, file: TokenFile) -> Result<(), TokensError> {
    let text = toml::to_string_pretty(&file).map_err(|e| invalid(path, e.to_string()))?;
    check(toml::from_str(&text).map_err(|e| invalid(path, e.message().to_string()))?)
        .map_err(|r| invalid(path, r))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(path))?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).map_err(io_error(path))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Adds a token to the tokens file at `path` (created if absent) and
/// returns its secret, which is stored only hashed.
pub fn add_token(
    path: &Path,
    name: &str,
    access: Vec<Access>,
    devices: Vec<String>,
    rate: Option<f64>,
) -> Result<String, TokensError> {
    let mut file = match read_file(path) {
        Err(TokensError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            TokenFile::default()
        }
        other => other?,
    };
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(invalid(
            path,
            format!("a token named `{name}` exists already"),
        ));
    }
    let secret = format!(
        "braid_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    file.tokens.push(TokenEntry {
        name: name.to_string(),
        sha256: hash_secret(&secret),
        access,
        devices,
        rate,
        revoked: false,
    });
    write_file(path, file)?;
    Ok(secret)
}

/// Marks the token `name` revoked in the file at `path`: running servers
/// refuse it within a second.
pub fn revoke_token(path: &Path, name: &str) -> Result<(), TokensError> {
    let mut file = read_file(path)?;
    let entry = file
        .tokens
        .iter_mut()
        .find(|t| t.name == name)
        .ok_or_else(|| invalid(path, format!("no token named `{name}`")))?;
    entry.revoked = true;
    write_file(path, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse(&format!(
            r#"
[[tokens]]
name = "lots"
sha256 = "{}"
devices = ["lot-*", "meter-1"]
rate = 10

[[tokens]]
name = "all"
sha256 = "{}"
devices = ["*"]
"#,
            hash_secret("s1"),
            hash_secret("s2")
        ))
        .unwrap()
    }

    #[test]
    fn secrets_scopes_and_rates() {
        let t = tokens();
        assert_eq!(t.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            t.authenticate(Some("Bearer nope")).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            t.authenticate(Some("Basic s1")).unwrap_err(),
            AuthError::Missing
        );
        let lots = t.authenticate(Some("Bearer s1")).unwrap();
        let all = t.authenticate(Some("Bearer s2")).unwrap();
        assert_eq!(all.name, "all");
        assert!(Tokens::check_scope(&lots, ["lot-3", "meter-1"]).is_ok());
        assert_eq!(
            Tokens::check_scope(&lots, ["lot-3", "meter-12"]),
            Err(AuthError::OutOfScope {
                token: "lots".into(),
                record: 1,
                device: "meter-12".into()
            })
        );
        assert!(Tokens::check_scope(&all, ["anything"]).is_ok());
        let now = Instant::now();
        assert!(t.take(&lots, 8, now).is_ok());
        let Err(AuthError::RateLimited { retry_after, .. }) = t.take(&lots, 5, now) else {
            panic!("over the rate")
        };
        assert_eq!(retry_after, 1);
        assert!(
            t.take(&lots, 5, now + std::time::Duration::from_millis(400))
                .is_ok()
        );
        assert!(t.take(&all, 1_000_000, now).is_ok(), "no rate, no limit");
    }

    #[test]
    fn bad_files_name_the_token_and_field() {
        let e = Tokens::parse("[[tokens]]\nname = \"x\"\nsha256 = \"abc\"\ndevices = [\"*\"]\n")
            .unwrap_err();
        assert!(e.contains("token 1 (`x`): field `sha256`"), "{e}");
        let e = Tokens::parse(&format!(
            "[[tokens]]\nname = \"x\"\nsha256 = \"{}\"\ndevices = []\n",
            hash_secret("a")
        ))
        .unwrap_err();
        assert!(e.contains("field `devices`"), "{e}");
    }

    #[test]
    fn added_tokens_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let secret = add_token(
            &path,
            "a",
            vec![Access::Write],
            vec!["lot-*".into()],
            Some(5.0),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret), "{text}");
        assert!(text.contains(&hash_secret(&secret)));
        let t = Tokens::load(&path).unwrap();
        assert_eq!(
            t.authenticate(Some(&format!("Bearer {secret}")))
                .unwrap()
                .name,
            "a"
        );
        assert!(add_token(&path, "a", vec![Access::Write], vec!["*".into()], None).is_err());
    }

    #[test]
    fn read_access_is_granted_apart_and_scoped() {
        let t = Tokens::parse(&format!(
            "[[tokens]]\nname = \"w\"\nsha256 = \"{}\"\ndevices = [\"*\"]\n\n[[tokens]]\nname = \"r\"\nsha256 = \"{}\"\naccess = [\"read\"]\ndevices = [\"lot-*\"]\n",
            hash_secret("w"),
            hash_secret("r")
        ))
        .unwrap();
        let w = t.authenticate(Some("Bearer w")).unwrap();
        let r = t.authenticate(Some("Bearer r")).unwrap();
        assert!(matches!(
            Tokens::check_read(&w, Some("lot-1")),
            Err(AuthError::NoAccess { .. })
        ));
        assert!(matches!(
            Tokens::check_scope(&r, ["lot-1"]),
            Err(AuthError::NoAccess { .. })
        ));
        assert!(Tokens::check_read(&r, Some("lot-1")).is_ok());
        let e = Tokens::check_read(&r, Some("meter-1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token `r` may not read device `meter-1`: it may read lot-*"
        );
        assert!(
            Tokens::check_read(&r, None).is_err(),
            "scoped: name a device"
        );
    }

    #[test]
    fn a_revoked_token_is_refused_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let keep = add_token(&path, "keep", vec![Access::Write], vec!["*".into()], None).unwrap();
        let gone = add_token(&path, "gone", vec![Access::Write], vec!["*".into()], None).unwrap();
        let t = Tokens::load(&path).unwrap();
        assert!(t.authenticate(Some(&format!("Bearer {gone}"))).is_ok());
        revoke_token(&path, "gone").unwrap();
        assert!(revoke_token(&path, "nobody").is_err());
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        let e = t.authenticate(Some(&format!("Bearer {gone}"))).unwrap_err();
        assert_eq!(e, AuthError::Revoked("gone".into()));
        assert!(e.is_unauthenticated());
        assert!(t.authenticate(Some(&format!("Bearer {keep}"))).is_ok());
        // A broken file is refused and the tokens in force stay.
        std::fs::write(&path, "[[tokens]]\nname = 1\n").unwrap();
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        assert!(t.authenticate(Some(&format!("Bearer {keep}"))).is_ok());
    }
}

//! Ingest tokens: who may write readings for which devices, and how fast.
//!
//! A tokens file (TOML) lists each token by name with the SHA-256 of its
//! secret (the secret itself is shown once, by `braid token new`, and never
//! stored), the devices it may write (exact ids, or prefixes ending in `*`)
//! and an optional rate in readings per second:
//!
//! ```toml
//! [[tokens]]
//! name = "car-park-gateway"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! devices = ["lot-*"]
//! rate = 500
//! ```
//!
//! A request's `Authorization: Bearer <secret>` is hashed and compared with
//! every entry in constant time (no early exit, no timing of the match).
//! No token, or an unknown one: 401. A reading for a device outside the
//! token's scope: 403, and nothing of the request is written. Over the rate:
//! 429 with `Retry-After`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One token as stored.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for people and logs.
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
    /// Devices it may write: ids, or prefixes ending in `*` (`*` alone:
    /// every device).
    pub devices: Vec<String>,
    /// Readings per second it may write (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

impl TokenEntry {
    /// Whether the token may write readings of `device`.
    pub fn allows(&self, device: &str) -> bool {
        self.devices.iter().any(|d| match d.strip_suffix('*') {
            Some(prefix) => device.starts_with(prefix),
            None => d == device,
        })
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
    #[error("this gateway needs a token: send `Authorization: Bearer <token>`")]
    Missing,
    /// A token that is not in the tokens file.
    #[error("the token is not known (revoked or mistyped)")]
    Unknown,
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

/// The SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tokens a gateway accepts, with each one's rate bucket.
#[derive(Debug)]
pub struct Tokens {
    entries: Vec<(TokenEntry, [u8; 32])>,
    buckets: Mutex<HashMap<usize, (f64, Instant)>>,
}

impl Tokens {
    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| TokensError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the text of a tokens file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut entries = Vec::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let digest = decode_hex32(&t.sha256).ok_or_else(|| {
                format!(
                    "token {} (`{}`): field `sha256`: expected 64 hex digits",
                    i + 1,
                    t.name
                )
            })?;
            if t.devices.is_empty() {
                return Err(format!(
                    "token {} (`{}`): field `devices`: name at least one device or prefix",
                    i + 1,
                    t.name
                ));
            }
            if t.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(format!(
                    "token {} (`{}`): field `rate`: must be a positive number",
                    i + 1,
                    t.name
                ));
            }
            entries.push((t, digest));
        }
        Ok(Self {
            entries,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of the secret in an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<usize, AuthError> {
        let secret = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found: Option<usize> = None;
        for (i, (_, d)) in self.entries.iter().enumerate() {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found.ok_or(AuthError::Unknown)
    }

    /// The entry at `index` (from [`Tokens::authenticate`]).
    pub fn entry(&self, index: usize) -> Option<&TokenEntry> {
        self.entries.get(index).map(|(e, _)| e)
    }

    /// Checks that token `index` may write every device, in record order.
    pub fn check_scope<'a>(
        &self,
        index: usize,
        devices: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), AuthError> {
        let Some(entry) = self.entry(index) else {
            return Err(AuthError::Unknown);
        };
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

    /// Takes `n` readings from token `index`'s bucket (a second's worth of
    /// its rate, refilled continuously), or says how long to wait.
    pub fn take(&self, index: usize, n: usize, now: Instant) -> Result<(), AuthError> {
        let Some(entry) = self.entry(index) else {
            return Err(AuthError::Unknown);
        };
        let Some(rate) = entry.rate else {
            return Ok(());
        };
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (level, at) = buckets.entry(index).or_insert((rate, now));
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

/// Adds a token to the tokens file at `path` (created if absent) and
/// returns its secret, which is stored only hashed.
pub fn add_token(
    path: &Path,
    name: &str,
    devices: Vec<String>,
    rate: Option<f64>,
) -> Result<String, TokensError> {
    let invalid = |reason: String| TokensError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| TokensError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file: TokenFile = match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenFile::default(),
        Err(e) => return Err(io(e)),
    };
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(invalid(format!("a token named `{name}` exists already")));
    }
    let secret = format!(
        "braid_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    file.tokens.push(TokenEntry {
        name: name.to_string(),
        sha256: hash_secret(&secret),
        devices,
        rate,
    });
    let text = toml::to_string_pretty(&file).map_err(|e| invalid(e.to_string()))?;
    Tokens::parse(&text).map_err(invalid)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(secret)
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
        assert_eq!(t.authenticate(None), Err(AuthError::Missing));
        assert_eq!(t.authenticate(Some("Bearer nope")), Err(AuthError::Unknown));
        assert_eq!(t.authenticate(Some("Basic s1")), Err(AuthError::Missing));
        let lots = t.authenticate(Some("Bearer s1")).unwrap();
        assert_eq!(t.authenticate(Some("Bearer s2")), Ok(1));
        assert!(t.check_scope(lots, ["lot-3", "meter-1"]).is_ok());
        assert_eq!(
            t.check_scope(lots, ["lot-3", "meter-12"]),
            Err(AuthError::OutOfScope {
                token: "lots".into(),
                record: 1,
                device: "meter-12".into()
            })
        );
        assert!(t.check_scope(1, ["anything"]).is_ok());
        let now = Instant::now();
        assert!(t.take(lots, 8, now).is_ok());
        let Err(AuthError::RateLimited { retry_after, .. }) = t.take(lots, 5, now) else {
            panic!("over the rate")
        };
        assert_eq!(retry_after, 1);
        assert!(
            t.take(lots, 5, now + std::time::Duration::from_millis(400))
                .is_ok()
        );
        assert!(t.take(1, 1_000_000, now).is_ok(), "no rate, no limit");
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
        let secret = add_token(&path, "a", vec!["lot-*".into()], Some(5.0)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret), "{text}");
        assert!(text.contains(&hash_secret(&secret)));
        let t = Tokens::load(&path).unwrap();
        assert_eq!(t.authenticate(Some(&format!("Bearer {secret}"))), Ok(0));
        assert!(add_token(&path, "a", vec!["*".into()], None).is_err());
    }
}

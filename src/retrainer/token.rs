//! The webhook's bearer token.
//!
//! Only the token's SHA-256 digest is kept, and a presented token is hashed and the
//! two digests compared with `subtle`'s constant-time equality. Hashing first makes
//! both sides 32 bytes, so neither the comparison's time nor an early exit on a
//! length mismatch says how long the token is or how much of a guess was right;
//! `subtle` keeps the compiler from turning the byte loop back into an early exit.
//! (Even a leak of how many digest bytes matched would not reveal the token: that
//! needs a SHA-256 preimage.)

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{MIN_TOKEN_CHARS, RetrainSettings};

/// Why the token could not be loaded; `triage retrainer` refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the retrainer needs a bearer token and none is configured; fix: set retrain.webhook_token_file to a file holding it (the file Alertmanager's http_config.authorization.credentials_file reads), or the variable TRIAGE__RETRAIN__WEBHOOK_TOKEN (retrain.webhook_token); create one with `openssl rand -hex 32 > FILE`"
    )]
    Missing,
    #[error("cannot read retrain.webhook_token_file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "retrain.webhook_token_file {path} holds no token; fix: write one into it, e.g. `openssl rand -hex 32 > {path}`"
    )]
    Empty { path: PathBuf },
    #[error(
        "the token in retrain.webhook_token_file {path} is shorter than {MIN_TOKEN_CHARS} characters, which can be guessed; fix: `openssl rand -hex 32 > {path}`"
    )]
    TooShort { path: PathBuf },
}

/// The configured token, as its digest.
#[derive(Clone)]
pub struct WebhookToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for WebhookToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookToken(***)")
    }
}

impl WebhookToken {
    /// A token from its text.
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// The token from `retrain.webhook_token_file` or `retrain.webhook_token` (the
    /// configuration's validation has already refused both at once, and a short
    /// `webhook_token`). The file is trimmed, as Alertmanager trims `credentials_file`.
    pub fn from_settings(settings: &RetrainSettings) -> Result<Self, TokenError> {
        let path = &settings.webhook_token_file;
        if !path.as_os_str().is_empty() {
            let path = crate::config::expand_home(path);
            let text = std::fs::read_to_string(&path).map_err(|source| TokenError::Unreadable {
                path: path.clone(),
                source,
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(TokenError::Empty { path });
            }
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(TokenError::TooShort { path });
            }
            return Ok(Self::new(token));
        }
        let token = settings.webhook_token.expose().trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        Ok(Self::new(token))
    }

    /// Whether `presented` is the token, in time independent of both.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }

    /// Checks an `Authorization` header value: `Bearer <token>` (the scheme in any
    /// case, RFC 7235), as Alertmanager's `http_config.authorization` sends it.
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<(), AuthFailure> {
        let value = header.ok_or(AuthFailure::Missing)?;
        let (scheme, credentials) = split_scheme(value).ok_or(AuthFailure::NotBearer)?;
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(AuthFailure::NotBearer);
        }
        if self.matches(credentials.trim_ascii()) {
            Ok(())
        } else {
            Err(AuthFailure::Wrong)
        }
    }
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    Some((&value[..space], &value[space + 1..]))
}

/// Why a request was refused (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no Authorization header; send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("wrong bearer token")]
    Wrong,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_right_token_in_a_bearer_header_passes() {
        let t = WebhookToken::new(TOKEN);
        let header = format!("Bearer {TOKEN}");
        assert_eq!(t.check_header(Some(header.as_bytes())), Ok(()));
        let lower = format!("bearer  {TOKEN} ");
        assert_eq!(t.check_header(Some(lower.as_bytes())), Ok(()));
    }

    #[test]
    fn a_missing_wrong_or_non_bearer_token_is_refused() {
        let t = WebhookToken::new(TOKEN);
        assert_eq!(t.check_header(None), Err(AuthFailure::Missing));
        assert_eq!(
            t.check_header(Some(b"Bearer 0123456789abcdef0123456789abcdeX")),
            Err(AuthFailure::Wrong)
        );
        // A prefix of the token, and the token with more after it, are both wrong.
        assert_eq!(
            t.check_header(Some(b"Bearer 0123456789abcdef")),
            Err(AuthFailure::Wrong)
        );
        let longer = format!("Bearer {TOKEN}0");
        assert_eq!(
            t.check_header(Some(longer.as_bytes())),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(
            t.check_header(Some(b"Bearer  ")),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            t.check_header(Some(b"Bearer \"\"")),
            Err(AuthFailure::Wrong)
        );
        let basic = format!("Basic {TOKEN}");
        assert_eq!(
            t.check_header(Some(basic.as_bytes())),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            t.check_header(Some(TOKEN.as_bytes())),
            Err(AuthFailure::NotBearer)
        );
    }

    #[test]
    fn no_token_configured_names_the_keys() {
        let err = WebhookToken::from_settings(&RetrainSettings::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("retrain.webhook_token_file"), "{text}");
        assert!(text.contains("TRIAGE__RETRAIN__WEBHOOK_TOKEN"), "{text}");
    }

    #[test]
    fn token_file_is_read_trimmed_like_alertmanager_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        let settings = RetrainSettings {
            webhook_token_file: path.clone(),
            ..RetrainSettings::default()
        };
        let t = WebhookToken::from_settings(&settings).unwrap();
        assert!(t.matches(TOKEN.as_bytes()));

        std::fs::write(&path, "\n").unwrap();
        let err = WebhookToken::from_settings(&settings).unwrap_err();
        assert!(matches!(err, TokenError::Empty { .. }), "{err}");
        std::fs::write(&path, "abc").unwrap();
        let err = WebhookToken::from_settings(&settings).unwrap_err();
        assert!(matches!(err, TokenError::TooShort { .. }), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = WebhookToken::from_settings(&settings).unwrap_err();
        assert!(
            err.to_string().contains("retrain.webhook_token_file"),
            "{err}"
        );
    }

    #[test]
    fn token_from_settings_value() {
        let settings = RetrainSettings {
            webhook_token: Secret::new(TOKEN),
            ..RetrainSettings::default()
        };
        let t = WebhookToken::from_settings(&settings).unwrap();
        assert!(t.matches(TOKEN.as_bytes()));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "WebhookToken(***)");
    }
}

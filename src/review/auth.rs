//! Who may answer the review queue: reviewer accounts from `review.reviewers`
//! (Argon2id password hashes, never the passwords), a signed session cookie, and
//! CSRF tokens for the forms.
//!
//! Stateless on purpose: a session is `name.expiry.mac`, the MAC an HMAC-SHA-256
//! under `review.session_secret`, so every replica with the same secret accepts a
//! sign-in made on another, and nothing is stored. A form's token is the MAC of its
//! session (or, on the sign-in form, of a random pre-session cookie): a page from
//! another site can send the cookie but cannot read or compute the token. Every
//! comparison of a MAC is constant-time (`hmac`'s `verify_slice`).
//!
//! A sign-in with an unknown name verifies the password against a dummy hash, so
//! the time taken does not tell which half was wrong; and the answer is the same.
//! Argon2 is slow on purpose (about 20 MiB and tens of ms a try): at most
//! [`MAX_SIGN_INS`] run at once, beyond it a sign-in is refused as busy (counted).

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::config::{ReviewSettings, valid_reviewer_name};

type HmacSha256 = Hmac<Sha256>;

/// Sign-ins verified at once, at most.
pub const MAX_SIGN_INS: usize = 2;

/// Why a sign-in was refused. The message shown is the same for a wrong name and a
/// wrong password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    WrongNameOrPassword,
    /// More sign-ins at once than [`MAX_SIGN_INS`].
    Busy,
}

/// The accounts, and the key that signs sessions and tokens.
#[derive(Clone)]
pub struct Gate {
    accounts: Arc<Vec<(String, String)>>,
    key: Arc<[u8; 32]>,
    ttl_s: i64,
    verifying: Arc<Semaphore>,
    /// Whether the key came from configuration (shared by the replicas).
    pub shared_key: bool,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("accounts", &self.accounts.len())
            .field("key", &"***")
            .finish()
    }
}

/// A hash of a password no one has, for names that have no account.
fn dummy_hash() -> String {
    hash_password("not a password: for unknown names").unwrap_or_default()
}

/// The Argon2id hash of `password` (OWASP's parameters: 19 MiB, 2 passes), as a PHC
/// string for `review.reviewers`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| format!("the system's random source failed: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Gate {
    /// The gate `review` configures. Without a `session_secret` a random key is made
    /// (sign-ins then hold on this process only).
    pub fn new(review: &ReviewSettings) -> Result<Self, String> {
        let mut key = [0u8; 32];
        let shared_key = !review.session_secret.is_empty();
        if shared_key {
            let digest = <Sha256 as sha2::Digest>::digest(review.session_secret.expose());
            key.copy_from_slice(&digest);
        } else {
            rand::rngs::OsRng
                .try_fill_bytes(&mut key)
                .map_err(|e| format!("the system's random source failed: {e}"))?;
        }
        for r in &review.reviewers {
            let readable = PasswordHash::new(&r.password_hash)
                .map_err(|e| e.to_string())
                .and_then(|h| match (h.salt, h.hash) {
                    (Some(_), Some(_)) => Ok(()),
                    _ => Err("no salt or no hash".to_string()),
                });
            readable.map_err(|e| {
                format!(
                    "review.reviewers: the password hash of {:?} cannot be read ({e}); fix: print a new one with `triage reviewer {}`",
                    r.name, r.name
                )
            })?;
        }
        let mut accounts: Vec<(String, String)> = review
            .reviewers
            .iter()
            .map(|r| (r.name.clone(), r.password_hash.clone()))
            .collect();
        // The dummy for unknown names, last, under a name no account can have.
        accounts.push((String::new(), dummy_hash()));
        Ok(Self {
            accounts: Arc::new(accounts),
            key: Arc::new(key),
            ttl_s: i64::try_from(review.session_ttl_s).unwrap_or(i64::MAX),
            verifying: Arc::new(Semaphore::new(MAX_SIGN_INS)),
            shared_key,
        })
    }

    /// How long a session lasts, in seconds.
    pub fn ttl_s(&self) -> i64 {
        self.ttl_s
    }

    /// Whether anyone may sign in.
    pub fn has_accounts(&self) -> bool {
        self.accounts.len() > 1
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.key.as_slice()).expect("any key length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    fn tag(&self, parts: &[&[u8]]) -> String {
        hex(&self.mac(parts).finalize().into_bytes())
    }

    fn tag_ok(&self, parts: &[&[u8]], tag: &str) -> bool {
        unhex(tag).is_some_and(|t| self.mac(parts).verify_slice(&t).is_ok())
    }

    /// Checks `name` and `password` (off the async threads); the session cookie's
    /// value on success.
    pub async fn sign_in(&self, name: &str, password: &str, now_s: i64) -> Result<String, Refusal> {
        let Ok(_permit) = self.verifying.clone().try_acquire_owned() else {
            return Err(Refusal::Busy);
        };
        let known = valid_reviewer_name(name)
            .then(|| self.accounts.iter().position(|(n, _)| n == name))
            .flatten();
        let index = known.unwrap_or(self.accounts.len() - 1);
        let accounts = self.accounts.clone();
        let password = password.to_string();
        let matched =
            tokio::task::spawn_blocking(move || verify_password(&password, &accounts[index].1))
                .await
                .unwrap_or(false);
        if matched && known.is_some() {
            Ok(self.session(name, now_s))
        } else {
            Err(Refusal::WrongNameOrPassword)
        }
    }

    /// A session for `name` from `now_s` (seconds since the epoch).
    pub fn session(&self, name: &str, now_s: i64) -> String {
        let expires = now_s.saturating_add(self.ttl_s).to_string();
        let tag = self.tag(&[b"session", name.as_bytes(), expires.as_bytes()]);
        format!("{name}.{expires}.{tag}")
    }

    /// The reviewer a session cookie's value names, if it is genuine, not expired,
    /// and the account still exists.
    pub fn reviewer(&self, session: &str, now_s: i64) -> Option<String> {
        let mut parts = session.rsplitn(3, '.');
        let (tag, expires, name) = (parts.next()?, parts.next()?, parts.next()?);
        if !self.tag_ok(&[b"session", name.as_bytes(), expires.as_bytes()], tag) {
            return None;
        }
        let live = expires.parse::<i64>().is_ok_and(|e| e > now_s);
        let exists = self.accounts[..self.accounts.len() - 1]
            .iter()
            .any(|(n, _)| n == name);
        (live && exists).then(|| name.to_string())
    }

    /// The token a form of this session carries.
    pub fn csrf(&self, session: &str) -> String {
        self.tag(&[b"csrf", session.as_bytes()])
    }

    /// Whether `token` is this session's form token.
    pub fn csrf_ok(&self, session: &str, token: &str) -> bool {
        self.tag_ok(&[b"csrf", session.as_bytes()], token)
    }

    /// A random value for the sign-in form's pre-session cookie.
    pub fn nonce() -> String {
        let mut n = [0u8; 16];
        // A failed random source leaves zeros: the token is then still a MAC under
        // the secret key, only shared by every such form.
        let _ = rand::rngs::OsRng.try_fill_bytes(&mut n);
        hex(&n)
    }

    /// The sign-in form's token for its pre-session cookie `nonce`.
    pub fn sign_in_token(&self, nonce: &str) -> String {
        self.tag(&[b"sign-in", nonce.as_bytes()])
    }

    pub fn sign_in_token_ok(&self, nonce: &str, token: &str) -> bool {
        !nonce.is_empty() && self.tag_ok(&[b"sign-in", nonce.as_bytes()], token)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Reviewer, Secret};

    fn gate(secret: &str) -> Gate {
        // Computed once: Argon2 takes a while even optimised.
        static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let hash = HASH.get_or_init(|| hash_password("correct horse").unwrap());
        Gate::new(&ReviewSettings {
            reviewers: vec![Reviewer {
                name: "ana".into(),
                password_hash: hash.clone(),
            }],
            session_secret: Secret::new(secret),
            ..ReviewSettings::default()
        })
        .unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn the_right_password_signs_in_and_a_wrong_name_or_password_says_the_same() {
        let g = gate(SECRET);
        let session = g.sign_in("ana", "correct horse", 1000).await.unwrap();
        assert_eq!(g.reviewer(&session, 1001).as_deref(), Some("ana"));
        for (name, password) in [
            ("ana", "wrong"),
            ("bob", "correct horse"),
            ("", "correct horse"),
        ] {
            assert_eq!(
                g.sign_in(name, password, 1000).await,
                Err(Refusal::WrongNameOrPassword),
                "{name}"
            );
        }
    }

    #[test]
    fn a_session_holds_on_every_replica_with_the_secret_until_it_expires() {
        let (a, b) = (gate(SECRET), gate(SECRET));
        let session = a.session("ana", 1000);
        assert_eq!(b.reviewer(&session, 1000).as_deref(), Some("ana"));
        assert_eq!(b.reviewer(&session, 1000 + 8 * 3600), None, "expired");
        let other = gate("another secret, also 32 characters long");
        assert_eq!(other.reviewer(&session, 1000), None);
        let own = gate("");
        assert!(!own.shared_key && own.reviewer(&session, 1000).is_none());
    }

    #[test]
    fn a_forged_session_or_token_is_refused() {
        let g = gate(SECRET);
        let session = g.session("ana", 1000);
        let expires_later = session.replacen(".29800.", ".99999999.", 1);
        assert_ne!(expires_later, session);
        assert_eq!(g.reviewer(&expires_later, 1000), None);
        let renamed = session.replacen("ana.", "bob.", 1);
        assert_eq!(g.reviewer(&renamed, 1000), None);
        for junk in ["", "ana", "ana.1.2", "....", "ana.29800.zz"] {
            assert_eq!(g.reviewer(junk, 1000), None, "{junk}");
        }
        let token = g.csrf(&session);
        assert!(g.csrf_ok(&session, &token));
        assert!(
            !g.csrf_ok(&g.session("ana", 1001), &token),
            "another session's token"
        );
        assert!(!g.csrf_ok(&session, ""));
        assert!(!g.csrf_ok(&session, &token[..63]));
        let nonce = Gate::nonce();
        assert!(g.sign_in_token_ok(&nonce, &g.sign_in_token(&nonce)));
        assert!(!g.sign_in_token_ok("", &g.sign_in_token("")));
        assert!(!g.sign_in_token_ok(&nonce, &token));
    }

    #[test]
    fn a_hash_that_cannot_be_read_stops_the_start_and_names_the_fix() {
        let e = Gate::new(&ReviewSettings {
            reviewers: vec![Reviewer {
                name: "ana".into(),
                password_hash: "$argon2id$garbage".into(),
            }],
            ..ReviewSettings::default()
        })
        .unwrap_err();
        assert!(e.contains("triage reviewer ana"), "{e}");
    }
}

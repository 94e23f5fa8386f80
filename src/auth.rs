//! Who is asking: web UI users, passwords, sessions, CSRF tokens, and the
//! rate limit on failed logins.
//!
//! Owns: password hashing (argon2id, salted, in PHC strings), the session
//! and login-CSRF cookies, HTTP Basic auth for scripts, and [`Auth`], the
//! in-memory state the HTTP threads share (failed logins per address, a
//! short-lived cache of verified Basic credentials). No threads, no
//! channels: the HTTP threads call in; sessions are written through
//! `Store::write` by the caller and read on the thread's own connection.
//!
//! Policy (SPEC §3, `[www] anonymous`): reads are open unless `anonymous =
//! "none"`; writes (force, stop, rebuild, cancel, pause) always need a
//! user. A session cookie is a random 256-bit token; the database keeps
//! only its SHA-256, so a copy of `state.sqlite` cannot be used to log in.
//! Forms carry the session's CSRF token; the login form, before there is a
//! session, uses a double-submit cookie.

use crate::store;
use anyhow::{anyhow, bail, Result};
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64ct::{Base64, Encoding};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Cookie holding the session token.
pub const SESSION_COOKIE: &str = "minibot_session";
/// Cookie holding the login form's CSRF token (double submit).
pub const LOGIN_COOKIE: &str = "minibot_login";
/// How long a session lasts after logging in.
pub const SESSION_SECS: i64 = 7 * 24 * 3600;

/// Failed logins an address may make in [`FAIL_WINDOW`] before it has to
/// wait for the window to pass.
pub const MAX_FAILURES: u32 = 5;
pub const FAIL_WINDOW: Duration = Duration::from_secs(300);
/// How long verified Basic credentials are trusted without hashing again.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);
const BASIC_CACHE_MAX: usize = 64;

/// Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's
/// minimum), about 30 ms per hash in a release build; the parameters are in
/// each PHC string, so raising them later keeps old hashes valid.
pub fn hash_password(password: &str) -> Result<String> {
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(|e| anyhow!("reading random bytes from the OS: {e}"))?;
    let salt = SaltString::encode_b64(&raw).map_err(|e| anyhow!("encoding a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow!("hashing the password: {e}"))
}

/// Constant-time check of `password` against a stored PHC string; false for
/// a malformed hash too.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A user name fit for a Basic auth header and a log line.
pub fn check_user_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        bail!("a user name has 1 to 64 characters");
    }
    if name
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        bail!("a user name may not contain ':', spaces or control characters");
    }
    Ok(())
}

pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < 8 {
        bail!("the password is too short: use at least 8 characters");
    }
    if password.len() > 1024 {
        bail!("the password is too long (over 1024 bytes)");
    }
    Ok(())
}

/// 32 random bytes as hex: session tokens and CSRF tokens.
pub fn random_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| anyhow!("reading random bytes from the OS: {e}"))?;
    Ok(hex::encode(b))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equality that takes the same time wherever the inputs differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Strict always; `max_age` 0
/// deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A session cookie: forms must carry `csrf`.
    Session { csrf: String, token_hash: String },
    /// HTTP Basic auth (scripts): no cookie, so no CSRF to fear.
    Basic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: User,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Wrong user name or password (401).
    BadCredentials,
    /// Too many failures from this address (429).
    RateLimited,
    /// Our own failure (500), e.g. the database.
    Internal(String),
}

struct Failures {
    count: u32,
    since: Instant,
}

/// SHA-256 of an `Authorization` header → (user, PHC string, checked when).
type BasicCache = HashMap<[u8; 32], (User, String, Instant)>;

/// Shared by the HTTP threads; cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    failures: Arc<Mutex<HashMap<String, Failures>>>,
    /// SHA-256 of an `Authorization` header → (user, the PHC string it was
    /// checked against, when). A hit still needs the stored hash to be the
    /// same, so a changed password or a removed user takes effect at once.
    basic_ok: Arc<Mutex<BasicCache>>,
}

impl Auth {
    pub fn new() -> Auth {
        Auth::default()
    }

    /// Whether `addr` has used up its failed logins.
    pub fn limited(&self, addr: &str) -> bool {
        let Ok(mut map) = self.failures.lock() else {
            return false;
        };
        match map.get(addr) {
            Some(f) if f.since.elapsed() >= FAIL_WINDOW => {
                map.remove(addr);
                false
            }
            Some(f) => f.count >= MAX_FAILURES,
            None => false,
        }
    }

    fn record_failure(&self, addr: &str, name: &str, how: &str) {
        log::warn!("failed login for user {name:?} from {addr} ({how})");
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        // Bounded: forget windows that have passed before growing further.
        if map.len() > 10_000 {
            map.retain(|_, f| f.since.elapsed() < FAIL_WINDOW);
        }
        let f = map.entry(addr.to_string()).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        if f.since.elapsed() >= FAIL_WINDOW {
            *f = Failures {
                count: 0,
                since: Instant::now(),
            };
        }
        f.count += 1;
        if f.count == MAX_FAILURES {
            log::warn!(
                "{addr}: {MAX_FAILURES} failed logins; refusing logins from it for {}s",
                FAIL_WINDOW.as_secs()
            );
        }
    }

    /// Checks a name and password (login form or Basic auth), counting
    /// failures per address; a limited address is refused before any hash
    /// is computed, so guessing is slow and cheap for us.
    pub fn check(
        &self,
        conn: &Connection,
        name: &str,
        password: &str,
        addr: &str,
        how: &str,
    ) -> Result<(User, String), AuthError> {
        if self.limited(addr) {
            log::warn!("login for user {name:?} from {addr} refused: rate limited ({how})");
            return Err(AuthError::RateLimited);
        }
        let row =
            store::user_password(conn, name).map_err(|e| AuthError::Internal(e.to_string()))?;
        let ok = match &row {
            Some((_, phc)) => verify_password(password, phc),
            None => {
                // Same work for a missing user, so timing does not tell
                // which names exist.
                verify_password(password, DUMMY_HASH);
                false
            }
        };
        match row {
            Some((id, phc)) if ok => Ok((
                User {
                    id,
                    name: name.to_string(),
                },
                phc,
            )),
            _ => {
                self.record_failure(addr, name, how);
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// Who sent this request: a session cookie or Basic credentials, or
    /// nobody (Ok(None)). Wrong Basic credentials are an error even for a
    /// read: a script should hear that its password is wrong.
    pub fn identify(
        &self,
        conn: &Connection,
        headers: &[(String, String)],
        addr: &str,
    ) -> Result<Option<Login>, AuthError> {
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        if let Some(authz) = header("authorization") {
            return self.basic(conn, authz, addr).map(Some);
        }
        let Some(token) = headers
            .iter()
            .filter(|(k, _)| k == "cookie")
            .find_map(|(_, v)| cookie(v, SESSION_COOKIE))
        else {
            return Ok(None);
        };
        let th = token_hash(token);
        let found = store::session(conn, &th, crate::model::now())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(found.map(|(id, name, csrf)| Login {
            user: User { id, name },
            via: Via::Session {
                csrf,
                token_hash: th,
            },
        }))
    }

    fn basic(&self, conn: &Connection, authz: &str, addr: &str) -> Result<Login, AuthError> {
        let Some(b64) = authz
            .strip_prefix("Basic ")
            .or_else(|| authz.strip_prefix("basic "))
        else {
            return Err(AuthError::BadCredentials);
        };
        if self.limited(addr) {
            return Err(AuthError::RateLimited);
        }
        let key: [u8; 32] = Sha256::digest(authz.as_bytes()).into();
        let cached = self.basic_ok.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((user, phc, at)) = cached {
            let current = store::user_password(conn, &user.name)
                .map_err(|e| AuthError::Internal(e.to_string()))?;
            if at.elapsed() < BASIC_CACHE_TTL
                && current.is_some_and(|(id, p)| id == user.id && p == phc)
            {
                return Ok(Login {
                    user,
                    via: Via::Basic,
                });
            }
        }
        let decoded = Base64::decode_vec(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(AuthError::BadCredentials)?;
        let (name, password) = decoded.split_once(':').ok_or(AuthError::BadCredentials)?;
        let (user, phc) = self.check(conn, name, password, addr, "basic auth")?;
        if let Ok(mut m) = self.basic_ok.lock() {
            if m.len() >= BASIC_CACHE_MAX {
                m.clear();
            }
            m.insert(key, (user.clone(), phc, Instant::now()));
        }
        Ok(Login {
            user,
            via: Via::Basic,
        })
    }
}

/// A valid argon2id hash of a random password nobody knows, verified
/// against when the user does not exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0B0bQYMbR7+Mr3N8qv/HDOnJFHZWnBfj6bCyBzQa9wk";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(!a.contains("correct horse"));
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("correct horsf", &a));
        assert!(!verify_password("x", "not a hash"));
        // The dummy hash parses, so a missing user costs the same.
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn names_passwords_tokens_cookies() {
        assert!(check_user_name("alice").is_ok());
        for bad in ["", "a:b", "a b", "a\nb", &"x".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("12345678").is_ok());
        assert!(check_password("1234567").is_err());
        let t = random_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token().unwrap());
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t, &t[1..]));
        assert_eq!(
            cookie("a=1; minibot_session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("minibot_session_x=1", SESSION_COOKIE), None);
        let c = set_cookie(SESSION_COOKIE, "v", 60);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age=60")
        );
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        store::create(&path).unwrap();
        let conn = store::open_admin(&path).unwrap();
        (dir, conn)
    }

    #[test]
    fn basic_auth_sessions_and_rate_limit() {
        let (_dir, conn) = db();
        let phc = hash_password("s3cret-pass").unwrap();
        let id = store::add_user(&conn, "alice", &phc).unwrap();
        assert!(store::add_user(&conn, "alice", &phc).is_err());
        let auth = Auth::new();
        let hdr = |v: &str| vec![("authorization".to_string(), v.to_string())];
        // alice:s3cret-pass
        let good = hdr("Basic YWxpY2U6czNjcmV0LXBhc3M=");
        let login = auth.identify(&conn, &good, "a").unwrap().unwrap();
        assert_eq!(
            login.user,
            User {
                id,
                name: "alice".into()
            }
        );
        assert_eq!(login.via, Via::Basic);
        // Cached, but a changed password is seen at once.
        store::set_user_password(&conn, "alice", &hash_password("other-pass").unwrap()).unwrap();
        assert_eq!(
            auth.identify(&conn, &good, "a"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(auth.identify(&conn, &[], "a"), Ok(None));

        // Sessions: found by the token's hash, not after expiry or logout.
        let token = random_token().unwrap();
        store::create_session(
            &conn,
            &token_hash(&token),
            id,
            "csrf1",
            crate::model::now() + 60,
        )
        .unwrap();
        let cookie_hdr = vec![(
            "cookie".to_string(),
            format!("x=1; {SESSION_COOKIE}={token}"),
        )];
        let l = auth.identify(&conn, &cookie_hdr, "a").unwrap().unwrap();
        assert!(matches!(l.via, Via::Session { ref csrf, .. } if csrf == "csrf1"));
        store::delete_session(&conn, &token_hash(&token)).unwrap();
        assert_eq!(auth.identify(&conn, &cookie_hdr, "a"), Ok(None));

        // Five failures from one address lock it out; others are unaffected.
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(
                auth.check(&conn, "alice", "wrong", "1.2.3.4", "t").err(),
                Some(AuthError::BadCredentials)
            );
        }
        assert!(auth
            .check(&conn, "alice", "other-pass", "1.2.3.4", "t")
            .is_ok());
        assert!(auth.check(&conn, "nobody", "x", "1.2.3.4", "t").is_err());
        assert_eq!(
            auth.check(&conn, "alice", "other-pass", "1.2.3.4", "t")
                .err(),
            Some(AuthError::RateLimited)
        );
        assert!(auth
            .check(&conn, "alice", "other-pass", "5.6.7.8", "t")
            .is_ok());
        assert!(store::remove_user(&conn, "alice").unwrap());
        assert!(!store::remove_user(&conn, "alice").unwrap());
    }
}

//! Who is asking: web UI users, passwords, sessions, CSRF tokens, and the
//! limits on password guessing (web logins here, worker logins through
//! [`LoginLimits`] from `worker_conn`).
//!
//! Owns: password hashing (argon2id, salted, in PHC strings; the working
//! memory comes from `sys::MappedBlocks`, never from malloc), the session
//! and login-CSRF cookies, HTTP Basic auth for scripts, and [`Auth`], the
//! in-memory state the HTTP threads share (the login limits, a short-lived
//! cache of verified credentials, the one-at-a-time verifier). No threads,
//! no channels: the HTTP threads call in; sessions are written through
//! `Store::write` by the caller and read on the thread's own connection.
//!
//! Policy (SPEC §3, `[www] anonymous`): reads are open unless `anonymous =
//! "none"`; writes (force, stop, rebuild, cancel, pause) always need a
//! user. A Gitea login (`web::gitea_login`) is a user `gitea:<login>`
//! without a password whose session keeps its Gitea organisations and
//! teams ([`Membership`]); it may write if `[www.auth] admins` names it
//! ([`Login::may_write`]), else it gets what anonymous visitors get. A session cookie is a random 256-bit token; the database keeps
//! only its SHA-256, so a copy of `state.sqlite` cannot be used to log in.
//! Forms carry the session's CSRF token; the login form, before there is a
//! session, uses a double-submit cookie.
//!
//! Guessing (issue 14 item 5). Every tunnel user arrives from 127.0.0.1 and
//! a neighbour can connect from any of 127.0.0.0/8, so the address alone
//! says little. A password is checked only if all of these allow it:
//! - the account: after [`NAME_FREE_FAILURES`] failures against a name,
//!   from anywhere, the next check of that name waits 1 s, then 2 s, 4 s …
//!   up to [`NAME_MAX_DELAY`]; attempts inside the wait are refused
//!   without hashing (and do not count), and a name with failures has one
//!   check at a time (two admitted together would both be checked before
//!   the first failure made the name wait);
//! - the address: after [`MAX_FAILURES`] failures its attempts get no free
//!   failures on any name (a name with one failure waits 1 s, two 2 s …),
//!   but it may still try names nobody has failed on (another user behind
//!   the same tunnel), and nobody is shut out for the whole window;
//! - the whole master: failed checks spend a budget of
//!   [`GLOBAL_FAIL_BURST`] refilled at [`GLOBAL_FAIL_PER_SEC`]; with it
//!   spent, only known-good credentials are checked;
//! - one Argon2 check runs at a time, one more may wait; others get 429 at
//!   once instead of holding an HTTP thread.
//!
//! Credentials that were right before (the same name and password, the
//! account's hash unchanged, within [`TRUST_TTL`]) skip the first three:
//! the owner gets in while someone else's guessing has the account or the
//! address slowed down. A session cookie never meets any limit. On the
//! worker port, where the proof cannot be recognised as the same as last
//! time, the address a worker last logged in from plays that part
//! ([`Trust::Address`]), unless that address has used up its own failures.

use crate::config::{GiteaAuth, Grant};
use crate::db;
use crate::model::UserId;
use crate::sys::MappedBlocks;
use anyhow::{anyhow, bail, Context, Result};
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Params, Version};
use base64ct::{Base64, Encoding};

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Cookie holding the session token.
pub(crate) const SESSION_COOKIE: &str = "minibot_session";
/// Cookie holding the login form's CSRF token (double submit).
pub(crate) const LOGIN_COOKIE: &str = "minibot_login";
/// How long a session lasts after logging in.
pub(crate) const SESSION_SECS: i64 = 7 * 24 * 3600;

/// Failed logins an address may make before its attempts get no free
/// failures on any name (see the module header).
pub(crate) const MAX_FAILURES: u32 = 5;
/// Failure counts (per address, per name) are forgotten after this long
/// without a failure.
pub(crate) const FAIL_WINDOW: Duration = Duration::from_secs(300);
/// Failures against one name that cost no wait: typos.
pub(crate) const NAME_FREE_FAILURES: u32 = 3;
/// The longest wait between checks of a name that is being guessed.
pub(crate) const NAME_MAX_DELAY: Duration = Duration::from_secs(30);
/// Failed checks the whole master allows at once …
pub(crate) const GLOBAL_FAIL_BURST: f64 = 5.0;
/// … and per second after that.
pub(crate) const GLOBAL_FAIL_PER_SEC: f64 = 1.0;
/// Argon2 checks running or waiting at once; more get 429 at once. One
/// runs, one waits: of the 4 HTTP threads, 2 are always free for sessions.
pub(crate) const MAX_VERIFYING: usize = 2;
/// How long verified credentials are trusted without hashing again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long credentials that were right once skip the guessing limits
/// (they are still hashed again after [`CACHE_TTL`]).
pub(crate) const TRUST_TTL: Duration = Duration::from_secs(24 * 3600);
const CACHE_MAX: usize = 256;
/// Argon2 memory above this (in 1 KiB blocks) is refused: a PHC string is
/// ours, but a hand-edited database must not make us map gigabytes.
const MAX_BLOCKS: usize = 256 * 1024;
/// Full log lines about failed logins per minute; the rest are counted.
const LOG_LINES_PER_MINUTE: u32 = 10;
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's
/// minimum), about 30 ms per hash in a release build; the parameters are in
/// each PHC string, so raising them later keeps old hashes valid.
pub fn hash_password(password: &str) -> Result<String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| anyhow!("reading random bytes from the OS: {e}"))?;
    let salt = Salt::new(&raw).map_err(|e| anyhow!("making a salt: {e}"))?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        &raw,
        &mut out,
    )?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow!("encoding params: {e}"))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| anyhow!("encoding the hash: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Argon2 into `out` with working memory from its own mapping, unmapped
/// before returning (item 6: a check leaves no resident memory behind).
fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        bail!("argon2 memory of {blocks} KiB is above the {MAX_BLOCKS} KiB cap");
    }
    let mut memory = MappedBlocks::new(blocks).context("mapping argon2 memory")?;
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, &mut *memory)
        .map_err(|e| anyhow!("argon2: {e}"))
}

/// Constant-time check of `password` against a stored PHC string; false for
/// a malformed hash too.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    match verify_phc(password.as_bytes(), phc) {
        Ok(ok) => ok,
        Err(e) => {
            log::error!("checking a password against a stored hash: {e:#}");
            false
        }
    }
}

/// Recomputes the hash with the PHC string's own algorithm, version,
/// parameters and salt, then compares in constant time.
fn verify_phc(password: &[u8], phc: &str) -> Result<bool> {
    let h = PasswordHash::new(phc).map_err(|e| anyhow!("parsing the PHC string: {e}"))?;
    let algorithm =
        Algorithm::try_from(h.algorithm.as_str()).map_err(|e| anyhow!("algorithm: {e}"))?;
    let version = match h.version {
        Some(v) => Version::try_from(v).map_err(|e| anyhow!("version: {e}"))?,
        None => Version::default(),
    };
    let params = Params::try_from(&h).map_err(|e| anyhow!("parameters: {e}"))?;
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        bail!("the PHC string has no salt or no hash");
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    argon2_into(algorithm, version, params, password, &salt, out)?;
    Ok(same_bytes(out, expected.as_bytes()))
}

/// SHA-256 of a per-process salt and two strings (the first one
/// length-prefixed, so ("ab", "c") and ("a", "bc") differ): map keys that
/// keep neither the strings nor a guessable hash of them in memory.
fn salted_pair_hash(salt: &[u8], first: &str, second: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update((first.len() as u64).to_be_bytes());
    h.update(first.as_bytes());
    h.update(second.as_bytes());
    h.finalize().into()
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
pub(crate) fn random_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow!("reading random bytes from the OS: {e}"))?;
    Ok(hex::encode(b))
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equality that takes the same time wherever the inputs differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// As [`same_token`], for bytes.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Strict always; `max_age` 0
/// deletes the cookie.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub id: UserId,
    pub name: String,
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// A session cookie: forms must carry `csrf`.
    Session { csrf: String, token_hash: String },
    /// HTTP Basic auth (scripts): no cookie, so no CSRF to fear.
    Basic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub user: User,
    pub via: Via,
    /// A Gitea login's organisations and teams (its session's); None for
    /// a local user.
    pub gitea: Option<Membership>,
}

impl Login {
    /// May this login force, stop, rebuild, cancel and pause? A local user
    /// may; a Gitea login if `[www.auth] admins` names it, one of its
    /// organisations or one of its teams, as the config says now (so a
    /// reconfig takes effect on live sessions).
    pub(crate) fn may_write(&self, auth: Option<&GiteaAuth>) -> bool {
        match (&self.gitea, auth) {
            (None, _) => true,
            (Some(m), Some(a)) => m.matches(&a.admins),
            (Some(_), None) => false,
        }
    }
}

/// What Gitea said of a Gitea login when it logged in, kept with its
/// session (`sessions.gitea`, JSON): names lower case, as Gitea compares
/// them, each checked with `config::is_gitea_name`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Membership {
    pub login: String,
    pub orgs: Vec<String>,
    /// `org/team`.
    pub teams: Vec<String>,
}

impl Membership {
    /// Whether any of `grants` names this login, an organisation or a team
    /// of it.
    pub(crate) fn matches(&self, grants: &[Grant]) -> bool {
        grants.iter().any(|g| match g {
            Grant::User(u) => *u == self.login,
            Grant::Org(o) => self.orgs.iter().any(|x| x == o),
            Grant::Team { org, team } => self
                .teams
                .iter()
                .any(|t| t.split_once('/') == Some((org.as_str(), team.as_str()))),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// Wrong user name or password (401).
    BadCredentials,
    /// Not checked now: the account is being guessed, the address or the
    /// whole master has too many failures, or checks are busy (429). The
    /// log says which; the answer should not.
    RateLimited,
    /// Our own failure (500), e.g. the database.
    Internal(String),
}

/// What a caller already knows about who is trying, which lets an attempt
/// skip some of the guessing limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Nothing: all the limits apply.
    None,
    /// These very credentials were right before: no limit applies (only
    /// someone who knows the password can present them).
    Credentials,
    /// This address logged in as this name before: the account's wait and
    /// the global budget do not apply unless the address itself has used
    /// up its failures (a neighbour on the same address gets
    /// [`MAX_FAILURES`] guesses, no more).
    Address,
}

/// Failures counted since the last quiet [`FAIL_WINDOW`].
#[derive(Clone, Copy)]
struct Count {
    n: u32,
    last: Instant,
}

impl Count {
    fn live(&self, now: Instant) -> u32 {
        if now.duration_since(self.last) < FAIL_WINDOW {
            self.n
        } else {
            0
        }
    }
}

/// The guessing limits of the module header, for one kind of login (the
/// web UI has one, the worker port another). Cheap to clone; `Default`
/// names the logins "login" in the log.
#[derive(Clone, Default)]
pub(crate) struct LoginLimits {
    inner: Arc<Mutex<Limits>>,
}

struct Limits {
    /// Failures per source address.
    addrs: HashMap<String, Count>,
    /// Failures per account (or worker) name, whoever tried.
    names: HashMap<String, Count>,
    /// Names with failures that have a check running now: one at a time,
    /// or two attempts admitted together would both get a check before
    /// the first failure made the name wait.
    checking: HashSet<String>,
    /// Global budget of failed checks (a token bucket).
    budget: f64,
    refilled: Instant,
    /// Salted-hash keys of (address, name) pairs that logged in before.
    known: HashMap<[u8; 32], Instant>,
    salt: [u8; 32],
    log: FloodLog,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new("login")
    }
}

impl Limits {
    fn new(what: &'static str) -> Limits {
        let mut salt = [0u8; 32];
        // Without OS randomness the salt stays zero: the keys are then plain
        // SHA-256, still never compared with anything an attacker supplies.
        let _ = getrandom::fill(&mut salt);
        Limits {
            addrs: HashMap::new(),
            names: HashMap::new(),
            checking: HashSet::new(),
            budget: GLOBAL_FAIL_BURST,
            refilled: Instant::now(),
            known: HashMap::new(),
            salt,
            log: FloodLog::new(what),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.budget = (self.budget + dt * GLOBAL_FAIL_PER_SEC).min(GLOBAL_FAIL_BURST);
        self.refilled = now;
    }

    /// How long `name` must still wait before its next check, if at all,
    /// after `free` failures that cost no wait.
    fn name_wait(&self, name: &str, now: Instant, free: u32) -> Option<Duration> {
        let c = self.names.get(name)?;
        let n = c.live(now);
        if n == 0 || n < free {
            return None;
        }
        let delay = Duration::from_secs(1u64 << (n - free).min(16)).min(NAME_MAX_DELAY);
        delay.checked_sub(now.duration_since(c.last))
    }

    fn pair_key(&self, addr: &str, name: &str) -> [u8; 32] {
        salted_pair_hash(&self.salt, addr, name)
    }
}

/// Entries kept per failure map (~100 bytes each). Web failures are few
/// (the global budget), but the worker port counts made-up names against
/// addresses without a budget, and 127.0.0.0/8 alone has 16 million.
const MAX_TRACKED: usize = 4096;

/// Counts one failure in `map`; returns the count (0: not tracked). Quiet
/// entries are forgotten before the map grows past [`MAX_TRACKED`]; when
/// it is full of live ones, new keys are not tracked (the name and global
/// limits still hold) rather than let a flood of addresses grow memory.
fn bump(map: &mut HashMap<String, Count>, key: &str, now: Instant) -> u32 {
    if map.len() >= MAX_TRACKED && !map.contains_key(key) {
        map.retain(|_, c| c.live(now) > 0);
        if map.len() >= MAX_TRACKED {
            return 0;
        }
    }
    let c = map
        .entry(key.to_string())
        .or_insert(Count { n: 0, last: now });
    c.n = c.live(now) + 1;
    c.last = now;
    c.n
}

impl LoginLimits {
    /// Limits whose log lines call the logins `what` ("worker login").
    pub(crate) fn new(what: &'static str) -> LoginLimits {
        LoginLimits {
            inner: Arc::new(Mutex::new(Limits::new(what))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Limits> {
        // The state is counters only: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a password for `name` from `addr` be checked now? A refusal is
    /// logged (summarised) with `how` and says why, for the log only:
    /// callers show one neutral answer. Keep the [`Admitted`] until the
    /// check's outcome is recorded.
    pub(crate) fn admit(
        &self,
        addr: &str,
        name: &str,
        trust: Trust,
        how: &str,
    ) -> Result<Admitted, String> {
        let now = Instant::now();
        let mut l = self.lock();
        l.refill(now);
        l.log.flush(now);
        let addr_failures = l.addrs.get(addr).map_or(0, |c| c.live(now));
        let addr_limited = addr_failures >= MAX_FAILURES;
        let why = match trust {
            Trust::Credentials => return Ok(Admitted(None)),
            Trust::Address if !addr_limited => return Ok(Admitted(None)),
            _ => {
                let name_failures = l.names.get(name).map_or(0, |c| c.live(now));
                // An address with many failures gets no free ones.
                let free = if addr_limited { 0 } else { NAME_FREE_FAILURES };
                if name_failures > 0 && l.checking.contains(name) {
                    "a check for this name is running".to_string()
                } else if let Some(wait) = l.name_wait(name, now, free) {
                    let from_addr = if addr_limited {
                        format!(", {addr_failures} from this address")
                    } else {
                        String::new()
                    };
                    format!(
                        "{name_failures} recent failures for this name{from_addr}; next check in {:.1} s",
                        wait.as_secs_f64()
                    )
                } else if l.budget < 1.0 {
                    "too many failed logins on the whole master".to_string()
                } else if name_failures > 0 {
                    l.checking.insert(name.to_string());
                    return Ok(Admitted(Some((self.clone(), name.to_string()))));
                } else {
                    return Ok(Admitted(None));
                }
            }
        };
        l.log.note(
            now,
            addr,
            name,
            &format!("for {name:?} from {addr} refused without a check ({how}): {why}"),
        );
        Err(why)
    }

    /// Counts a failed check against the address, the name and the global
    /// budget, and logs it (summarised).
    pub(crate) fn failed(&self, addr: &str, name: &str, how: &str) {
        let now = Instant::now();
        let mut l = self.lock();
        l.refill(now);
        l.log.flush(now);
        let na = bump(&mut l.addrs, addr, now);
        let nn = bump(&mut l.names, name, now);
        l.budget = (l.budget - 1.0).max(-GLOBAL_FAIL_BURST);
        l.log.note(
            now,
            addr,
            name,
            &format!(
                "failed for {name:?} from {addr} ({how}; failure {na} from this address, {nn} for this name)"
            ),
        );
    }

    /// A failed check of a name that does not exist, where that cannot be
    /// seen from outside (the worker port answers every refusal with the
    /// same bytes): counted against the address only. Such guesses can
    /// never succeed, so neither a wait on the name nor the global budget
    /// is needed, and a spray of made-up names cannot spend the budget
    /// that new workers need. (Not for the web UI, where a 429 that only
    /// real names could earn would tell which names exist.)
    pub(crate) fn failed_no_such_name(&self, addr: &str, name: &str, how: &str) {
        let now = Instant::now();
        let mut l = self.lock();
        l.log.flush(now);
        let na = bump(&mut l.addrs, addr, now);
        l.log.note(
            now,
            addr,
            name,
            &format!("failed for {name:?} from {addr} ({how}; failure {na} from this address)"),
        );
    }

    /// Logs (summarised) a refusal that is not a failed check, e.g. a
    /// worker name already connected.
    pub(crate) fn refused(&self, addr: &str, name: &str, why: &str) {
        let now = Instant::now();
        let mut l = self.lock();
        l.log.flush(now);
        l.log.note(
            now,
            addr,
            name,
            &format!("for {name:?} from {addr} refused: {why}"),
        );
    }

    /// Remembers that `addr` logged in as `name` ([`Trust::Address`]).
    pub(crate) fn succeeded(&self, addr: &str, name: &str) {
        let now = Instant::now();
        let mut l = self.lock();
        let key = l.pair_key(addr, name);
        if l.known.len() >= CACHE_MAX * 4 && !l.known.contains_key(&key) {
            l.known.retain(|_, at| now.duration_since(*at) < TRUST_TTL);
            if l.known.len() >= CACHE_MAX * 4 {
                // Still full of recent pairs: start over rather than grow.
                l.known.clear();
            }
        }
        l.known.insert(key, now);
    }

    /// Whether `addr` logged in as `name` within [`TRUST_TTL`].
    pub(crate) fn known_address(&self, addr: &str, name: &str) -> bool {
        let l = self.lock();
        let key = l.pair_key(addr, name);
        l.known.get(&key).is_some_and(|at| at.elapsed() < TRUST_TTL)
    }

    /// Logs (summarised per address and `kind`) any other refusal on a
    /// login port, e.g. garbage on the worker port; `text` follows the
    /// log's name for these logins.
    pub(crate) fn note(&self, addr: &str, kind: &str, text: &str) {
        let now = Instant::now();
        let mut l = self.lock();
        l.log.flush(now);
        l.log.note(now, addr, &format!("({kind})"), text);
    }
}

/// An attempt [`LoginLimits::admit`] let through; while it lives, other
/// untrusted checks of a name with failures wait (are refused).
pub(crate) struct Admitted(Option<(LoginLimits, String)>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((limits, name)) = self.0.take() {
            limits.lock().checking.remove(&name);
        }
    }
}

/// Failed-login log lines without the flood (item 10): the first event per
/// (address, name) is logged in full, later ones are counted and logged as
/// one line per minute; beyond [`LOG_LINES_PER_MINUTE`] full lines a
/// minute, new sources are only counted. Summaries are written when the
/// next attempt comes (no timer thread), so the count of a burst that
/// stopped appears with the next attempt.
/// Sources whose refusals are being counted for a summary line. Ten new
/// ones a minute at most, but one that stays busy is kept: without a cap,
/// sources kept busy on purpose would grow the map for as long as the
/// flood lasts. Beyond it, refusals are counted in the minute's overflow.
const MAX_LOGGED_SOURCES: usize = 256;

struct FloodLog {
    what: &'static str,
    sources: HashMap<(String, String), Pending>,
    minute: Instant,
    lines: u32,
    overflow: u32,
    overflow_addrs: HashSet<String>,
    /// The lines written, for the unit tests.
    #[cfg(test)]
    written: Vec<String>,
}

struct Pending {
    since: Instant,
    count: u32,
}

impl FloodLog {
    fn new(what: &'static str) -> FloodLog {
        FloodLog {
            what,
            sources: HashMap::new(),
            minute: Instant::now(),
            lines: 0,
            overflow: 0,
            overflow_addrs: HashSet::new(),
            #[cfg(test)]
            written: Vec::new(),
        }
    }

    fn emit(&mut self, line: String) {
        log::warn!("{line}");
        #[cfg(test)]
        self.written.push(line);
    }

    /// `label`: the name tried, or "(kind)" for other refusals.
    fn note(&mut self, now: Instant, addr: &str, label: &str, text: &str) {
        let key = (addr.to_string(), label.to_string());
        if let Some(p) = self.sources.get_mut(&key) {
            p.count += 1;
        } else if self.lines < LOG_LINES_PER_MINUTE && self.sources.len() < MAX_LOGGED_SOURCES {
            self.lines += 1;
            let later = if self.lines == LOG_LINES_PER_MINUTE {
                "; more from other addresses are only counted this minute"
            } else {
                "; more like it are counted, one line a minute"
            };
            self.emit(format!("{} {text}{later}", self.what));
            self.sources.insert(
                key,
                Pending {
                    since: now,
                    count: 0,
                },
            );
        } else {
            self.overflow += 1;
            if self.overflow_addrs.len() < 1000 {
                self.overflow_addrs.insert(key.0);
            }
        }
    }

    fn flush(&mut self, now: Instant) {
        let what = self.what;
        let mut lines = Vec::new();
        self.sources.retain(|(addr, label), p| {
            let age = now.duration_since(p.since);
            if age < LOG_PERIOD {
                return true;
            }
            if p.count == 0 {
                return false;
            }
            let label = if label.starts_with('(') {
                format!(" {label}")
            } else {
                format!(" for {label:?}")
            };
            lines.push(format!(
                "{} more failed or refused {what}s{label} from {addr} in the last {} s",
                p.count,
                age.as_secs()
            ));
            *p = Pending {
                since: now,
                count: 0,
            };
            true
        });
        for line in lines {
            self.emit(line);
        }
        let age = now.duration_since(self.minute);
        if age >= LOG_PERIOD {
            if self.overflow > 0 {
                self.emit(format!(
                    "{} more failed or refused {what}s from {} addresses in the last {} s (not logged one by one)",
                    self.overflow,
                    self.overflow_addrs.len(),
                    age.as_secs()
                ));
            }
            self.minute = now;
            self.lines = 0;
            self.overflow = 0;
            self.overflow_addrs.clear();
        }
    }
}

/// One Argon2 check at a time, and at most [`MAX_VERIFYING`] running or
/// waiting: each check maps ~19 MiB and takes tens of milliseconds, so
/// parallel guesses would only multiply memory and starve the HTTP threads.
#[derive(Default)]
struct Verifier {
    lock: Mutex<()>,
    queued: AtomicUsize,
}

/// A turn at the verifier; leaving the queue when dropped.
struct Turn<'a> {
    _guard: MutexGuard<'a, ()>,
    queued: &'a AtomicUsize,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Verifier {
    fn turn(&self) -> Option<Turn<'_>> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= MAX_VERIFYING {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Some(Turn {
            _guard: guard,
            queued: &self.queued,
        })
    }
}

/// Salted SHA-256 of (name, password) → (user, the PHC string it was
/// checked against, when).
type CredCache = HashMap<[u8; 32], (User, String, Instant)>;

/// Shared by the HTTP threads; cheap to clone.
#[derive(Clone)]
pub(crate) struct Auth {
    limits: LoginLimits,
    verifier: Arc<Verifier>,
    /// Credentials verified lately. A hit still needs the stored hash to be
    /// the same, so a changed password or a removed user takes effect at
    /// once. Within [`CACHE_TTL`] a hit needs no hashing; within
    /// [`TRUST_TTL`] it is hashed again but skips the guessing limits.
    verified: Arc<Mutex<CredCache>>,
    /// Per-process key for the cache, so its keys are not plain hashes of
    /// passwords.
    salt: [u8; 32],
    #[cfg(test)]
    skew: Arc<Mutex<Duration>>,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth::new()
    }
}

impl Auth {
    pub(crate) fn new() -> Auth {
        let mut salt = [0u8; 32];
        let _ = getrandom::fill(&mut salt);
        Auth {
            limits: LoginLimits::new("login"),
            verifier: Arc::default(),
            verified: Arc::default(),
            salt,
            #[cfg(test)]
            skew: Arc::default(),
        }
    }

    /// Makes every cached credential `by` older (unit tests of the TTLs;
    /// an `Instant` cannot go back further than the machine's uptime).
    #[cfg(test)]
    fn age_cache(&self, by: Duration) {
        *self.skew.lock().unwrap() += by;
    }

    /// How old a cache entry verified at `at` is.
    fn age(&self, at: Instant) -> Duration {
        #[cfg(test)]
        return at.elapsed() + *self.skew.lock().unwrap();
        #[cfg(not(test))]
        at.elapsed()
    }

    fn cred_key(&self, name: &str, password: &str) -> [u8; 32] {
        salted_pair_hash(&self.salt, name, password)
    }

    /// Logs (summarised per address, as failed logins are) a refused
    /// login of another kind, e.g. a "Log in with Gitea" callback.
    pub(crate) fn note_refusal(&self, addr: &str, kind: &str, text: &str) {
        self.limits.note(addr, kind, text);
    }

    /// Checks a name and password (login form or Basic auth) under the
    /// guessing limits of the module header. Refusals without a check are
    /// `RateLimited` whatever their cause (the reason goes to the log).
    pub(crate) fn check(
        &self,
        conn: &db::Conn,
        name: &str,
        password: &str,
        addr: &str,
        how: &str,
    ) -> Result<(User, String), AuthError> {
        let row = db::user_password(conn, name).map_err(|e| AuthError::Internal(e.to_string()))?;
        let key = self.cred_key(name, password);
        let cached = self.verified.lock().ok().and_then(|m| m.get(&key).cloned());
        let mut trust = Trust::None;
        if let (Some((user, phc, at)), Some((id, current))) = (cached, &row) {
            if user.id == *id && phc == *current {
                if self.age(at) < CACHE_TTL {
                    return Ok((user, phc));
                }
                if self.age(at) < TRUST_TTL {
                    trust = Trust::Credentials;
                }
            }
        }
        let Ok(_admitted) = self.limits.admit(addr, name, trust, how) else {
            return Err(AuthError::RateLimited);
        };
        let Some(_turn) = self.verifier.turn() else {
            self.limits.refused(addr, name, "password checks are busy");
            return Err(AuthError::RateLimited);
        };
        let ok = match &row {
            Some((_, phc)) => verify_password(password, phc),
            None => {
                // Same work for a missing user, so timing does not tell
                // which names exist.
                verify_password(password, DUMMY_HASH);
                false
            }
        };
        drop(_turn);
        match row {
            Some((id, phc)) if ok => {
                let user = User {
                    id,
                    name: name.to_string(),
                };
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= CACHE_MAX && !m.contains_key(&key) {
                        m.retain(|_, (_, _, at)| at.elapsed() < TRUST_TTL);
                        if m.len() >= CACHE_MAX {
                            m.clear();
                        }
                    }
                    m.insert(key, (user.clone(), phc.clone(), Instant::now()));
                }
                Ok((user, phc))
            }
            _ => {
                self.limits.failed(addr, name, how);
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// Who sent this request: a session cookie or Basic credentials, or
    /// nobody (Ok(None)). Wrong Basic credentials are an error even for a
    /// read: a script should hear that its password is wrong. A session
    /// is never refused for anyone's failed logins.
    pub(crate) fn identify(
        &self,
        conn: &db::Conn,
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
        let found = db::session(conn, &th, crate::model::now())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let Some(row) = found else {
            return Ok(None);
        };
        let gitea = match &row.gitea {
            None => None,
            Some(j) => Some(serde_json::from_str::<Membership>(j).map_err(|e| {
                AuthError::Internal(format!(
                    "sessions row of user {} ({}): column gitea is not a membership: {e}",
                    row.userid, row.name
                ))
            })?),
        };
        Ok(Some(Login {
            user: User {
                id: row.userid,
                name: row.name,
            },
            via: Via::Session {
                csrf: row.csrf,
                token_hash: th,
            },
            gitea,
        }))
    }

    fn basic(&self, conn: &db::Conn, authz: &str, addr: &str) -> Result<Login, AuthError> {
        let Some(b64) = authz
            .strip_prefix("Basic ")
            .or_else(|| authz.strip_prefix("basic "))
        else {
            return Err(AuthError::BadCredentials);
        };
        let decoded = Base64::decode_vec(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(AuthError::BadCredentials)?;
        let (name, password) = decoded.split_once(':').ok_or(AuthError::BadCredentials)?;
        let (user, _) = self.check(conn, name, password, addr, "basic auth")?;
        Ok(Login {
            user,
            via: Via::Basic,
            gitea: None,
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
        assert!(verify_phc(b"x", DUMMY_HASH).is_ok());
        // Our mapped-memory hashing agrees with the crate's own both ways
        // (hashes stored before this code still verify).
        use argon2::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default()
            .hash_password_with_salt(b"old hash", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(verify_password("old hash", &theirs));
        assert!(!verify_password("old hasi", &theirs));
        assert!(Argon2::default()
            .verify_password(b"correct horse", &PasswordHash::new(&a).unwrap())
            .is_ok());
        // A cost we refuse to map, rather than map gigabytes.
        let huge = theirs.replace("m=19456", "m=4000000");
        assert!(verify_phc(b"old hash", &huge).is_err());
    }

    #[test]
    fn limits_name_address_budget_and_trust() {
        let l = LoginLimits::new("test login");
        let ok = |addr: &str, name: &str, t: Trust| l.admit(addr, name, t, "t").is_ok();
        for i in 0..NAME_FREE_FAILURES {
            assert!(ok(&format!("10.0.0.{i}"), "alice", Trust::None));
            l.failed(&format!("10.0.0.{i}"), "alice", "t");
        }
        // The name waits, whichever address asks; known credentials do not.
        assert!(!ok("10.0.0.99", "alice", Trust::None));
        assert!(ok("10.0.0.99", "alice", Trust::Credentials));
        // A known address does, until it has used up its own failures.
        l.succeeded("127.0.0.1", "alice");
        assert!(l.known_address("127.0.0.1", "alice"));
        assert!(!l.known_address("127.0.0.2", "alice"));
        assert!(ok("127.0.0.1", "alice", Trust::Address));
        for _ in 0..MAX_FAILURES {
            l.failed("127.0.0.1", "x", "t");
        }
        assert!(!ok("127.0.0.1", "alice", Trust::Address));
        // The limited address may still try a name nobody guesses …
        // … unless the global budget is spent (5 + 1/s; 8 failures so far).
        assert!(!ok("127.0.0.1", "bob", Trust::None));
        assert!(ok("127.0.0.1", "bob", Trust::Credentials));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!ok("127.0.0.1", "bob", Trust::None), "budget still spent");
    }

    #[test]
    fn the_failure_log_is_summarised_and_bounded() {
        let mut log = FloodLog::new("login");
        let t0 = Instant::now();
        // 50 failures from one address: one line now …
        for i in 0..50 {
            log.flush(t0);
            log.note(t0, "127.0.0.5", "alice", &format!("failed {i}"));
        }
        assert_eq!(log.written.len(), 1, "{:?}", log.written);
        // … 50 from 50 addresses: up to the budget of first lines …
        for i in 0..50 {
            log.note(t0, &format!("127.0.1.{i}"), "alice", "failed");
        }
        assert_eq!(log.written.len(), LOG_LINES_PER_MINUTE as usize);
        // … and a minute later, a count for the first address and one
        // line for all the addresses not logged.
        let t1 = t0 + LOG_PERIOD + Duration::from_secs(1);
        log.flush(t1);
        let new = &log.written[LOG_LINES_PER_MINUTE as usize..];
        assert_eq!(new.len(), 2, "{new:?}");
        assert!(
            new.contains(
                &"49 more failed or refused logins for \"alice\" from 127.0.0.5 in the last 61 s"
                    .to_string()
            ),
            "{new:?}"
        );
        assert!(
            new.iter()
                .any(|l| l.starts_with("41 more failed or refused logins from 41 addresses")),
            "{new:?}"
        );
        // Quiet sources are forgotten: the next failure is a full line.
        log.flush(t1 + LOG_PERIOD);
        log.note(t1 + LOG_PERIOD, "127.0.0.5", "alice", "failed again");
        assert!(log
            .written
            .last()
            .unwrap()
            .starts_with("login failed again"));
    }

    /// Every in-memory table of the guessing limits has a bound that a
    /// spray of addresses and names cannot push past (ARCHITECTURE.md,
    /// "bounded bookkeeping").
    #[test]
    fn failure_tables_stay_bounded_under_a_spray() {
        let limits = LoginLimits::new("worker login");
        for i in 0..3 * MAX_TRACKED {
            let addr = format!("127.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
            limits.failed_no_such_name(&addr, &format!("made-up-{i}"), "worker port");
            limits.failed(&addr, &format!("name-{i}"), "worker port");
            limits.succeeded(&addr, &format!("name-{i}"));
        }
        let l = limits.lock();
        assert!(l.addrs.len() <= MAX_TRACKED, "{}", l.addrs.len());
        assert!(l.names.len() <= MAX_TRACKED, "{}", l.names.len());
        assert!(l.known.len() <= CACHE_MAX * 4, "{}", l.known.len());
        assert!(l.checking.is_empty());
        assert!(l.log.sources.len() <= MAX_LOGGED_SOURCES);
        assert!(l.log.overflow_addrs.len() <= 1000);
    }

    /// Sources kept busy on purpose, ten new ones a minute for a day, do
    /// not grow the log's table past its cap.
    #[test]
    fn busy_sources_do_not_grow_the_failure_log() {
        let mut log = FloodLog::new("login");
        let t0 = Instant::now();
        for minute in 0..24 * 60u64 {
            let now = t0 + LOG_PERIOD * minute as u32 + Duration::from_secs(1);
            log.flush(now);
            // Each source twice a minute: counted, so kept at the flush.
            let busy =
                ((minute as usize + 1) * LOG_LINES_PER_MINUTE as usize).min(4 * MAX_LOGGED_SOURCES);
            for i in (0..busy).chain(0..busy) {
                log.note(
                    now,
                    &format!("127.0.{}.{}", i / 250, i % 250),
                    "x",
                    "failed",
                );
            }
            assert!(log.sources.len() <= MAX_LOGGED_SOURCES, "minute {minute}");
        }
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

    fn db() -> (tempfile::TempDir, db::Tx) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        db::create(&path).unwrap();
        let conn = db::open_admin(&path).unwrap();
        (dir, conn)
    }

    /// A Cookie header with a fresh session for user `id`.
    fn cookie_hdr_live(conn: &db::Tx, id: UserId) -> Vec<(String, String)> {
        let token = random_token().unwrap();
        db::create_session(
            conn,
            &token_hash(&token),
            id,
            "c",
            crate::model::now() + 60,
            None,
        )
        .unwrap();
        vec![("cookie".to_string(), format!("{SESSION_COOKIE}={token}"))]
    }

    #[test]
    fn basic_auth_sessions_and_rate_limit() {
        let (_dir, conn) = db();
        let phc = hash_password("s3cret-pass").unwrap();
        let id = db::add_user(&conn, "alice", &phc).unwrap();
        assert!(db::add_user(&conn, "alice", &phc).is_err());
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
        db::set_user_password(&conn, "alice", &hash_password("other-pass").unwrap()).unwrap();
        assert_eq!(
            auth.identify(&conn, &good, "a"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(auth.identify(&conn, &[], "a"), Ok(None));

        // Sessions: found by the token's hash, not after expiry or logout.
        let token = random_token().unwrap();
        db::create_session(
            &conn,
            &token_hash(&token),
            id,
            "csrf1",
            crate::model::now() + 60,
            None,
        )
        .unwrap();
        let cookie_hdr = vec![(
            "cookie".to_string(),
            format!("x=1; {SESSION_COOKIE}={token}"),
        )];
        let l = auth.identify(&conn, &cookie_hdr, "a").unwrap().unwrap();
        assert!(matches!(l.via, Via::Session { ref csrf, .. } if csrf == "csrf1"));
        db::delete_session(&conn, &token_hash(&token)).unwrap();
        assert_eq!(auth.identify(&conn, &cookie_hdr, "a"), Ok(None));

        // Guessing from one address: after NAME_FREE_FAILURES the name
        // waits, from any address; the address limit then keeps it off
        // names being guessed, not off other accounts.
        let bob_id = db::add_user(&conn, "bob", &hash_password("bobs-pass").unwrap()).unwrap();
        // Alice logs in once (her credentials are now known-good); one
        // failure for her above, two more make her name wait.
        assert!(auth
            .check(&conn, "alice", "other-pass", "9.9.9.9", "t")
            .is_ok());
        for _ in 1..NAME_FREE_FAILURES {
            assert_eq!(
                auth.check(&conn, "alice", "wrong", "1.2.3.4", "t").err(),
                Some(AuthError::BadCredentials)
            );
        }
        assert_eq!(
            auth.check(&conn, "alice", "wrong", "5.6.7.8", "t").err(),
            Some(AuthError::RateLimited)
        );
        // Alice's credentials were right before: not refused, anywhere.
        assert!(auth
            .check(&conn, "alice", "other-pass", "5.6.7.8", "t")
            .is_ok());
        assert!(auth
            .check(&conn, "alice", "other-pass", "1.2.3.4", "t")
            .is_ok());
        // Past the cache's 5 minutes, alice's credentials are hashed again
        // but still skip the limits; past a day they are like any others.
        auth.age_cache(CACHE_TTL + Duration::from_secs(1));
        assert!(auth
            .check(&conn, "alice", "other-pass", "5.6.7.8", "t")
            .is_ok());
        auth.age_cache(TRUST_TTL);
        assert_eq!(
            auth.check(&conn, "alice", "other-pass", "5.6.7.8", "t")
                .err(),
            Some(AuthError::RateLimited)
        );
        // Three more failures from 1.2.3.4 (after the global budget, 1/s,
        // has refilled) use up its MAX_FAILURES.
        std::thread::sleep(Duration::from_secs(3));
        for who in ["nobody", "nobody2", "nobody3"] {
            assert_eq!(
                auth.check(&conn, who, "x", "1.2.3.4", "t").err(),
                Some(AuthError::BadCredentials)
            );
        }
        assert_eq!(
            auth.check(&conn, "nobody", "x", "1.2.3.4", "t").err(),
            Some(AuthError::RateLimited)
        );
        // 1.2.3.4 is limited: bob, whom nobody guesses, still gets in.
        let (u, _) = auth
            .check(&conn, "bob", "bobs-pass", "1.2.3.4", "t")
            .unwrap();
        assert_eq!(u.id, bob_id);
        // A session is never refused.
        let l = auth.identify(&conn, &cookie_hdr_live(&conn, id), "1.2.3.4");
        assert!(matches!(l, Ok(Some(_))), "{l:?}");
        assert!(db::remove_user(&conn, "alice").unwrap());
        assert!(!db::remove_user(&conn, "alice").unwrap());
    }

    /// A Gitea login's session carries its membership; what it may write
    /// follows the config's `admins` at each request; its user row (empty
    /// password hash) never passes a password check.
    #[test]
    fn gitea_sessions_and_roles() {
        let (_dir, conn) = db();
        let id = db::gitea_user(&conn, "gitea:isabell").unwrap();
        assert_eq!(db::gitea_user(&conn, "gitea:isabell").unwrap(), id);
        let m = Membership {
            login: "isabell".into(),
            orgs: vec!["myorg".into()],
            teams: vec!["myorg/ci".into()],
        };
        let token = random_token().unwrap();
        db::create_session(
            &conn,
            &token_hash(&token),
            id,
            "c",
            crate::model::now() + 60,
            Some(&serde_json::to_string(&m).unwrap()),
        )
        .unwrap();
        let hdr = vec![("cookie".to_string(), format!("{SESSION_COOKIE}={token}"))];
        let auth = Auth::new();
        let login = auth.identify(&conn, &hdr, "a").unwrap().unwrap();
        assert_eq!(login.user.name, "gitea:isabell");
        assert_eq!(login.gitea.as_ref(), Some(&m));
        let cfg = |admins: Vec<Grant>| GiteaAuth {
            base_url: "https://git.example.org".into(),
            client_id: "c".into(),
            client_secret: crate::config::Secret::Inline("s".into()),
            verify_tls: true,
            admins,
        };
        assert!(login.may_write(Some(&cfg(vec![Grant::Org("myorg".into())]))));
        assert!(!login.may_write(Some(&cfg(vec![Grant::User("bob".into())]))));
        assert!(!login.may_write(None));
        // A local user may always write.
        let local = Login {
            gitea: None,
            ..login.clone()
        };
        assert!(local.may_write(Some(&cfg(vec![]))));
        // No password (not even an empty one) opens a Gitea user's row.
        for pw in ["", "x", "isabell"] {
            assert_eq!(
                auth.check(&conn, "gitea:isabell", pw, "b", "t").err(),
                Some(AuthError::BadCredentials)
            );
        }
        // A corrupt membership is an error naming its row, not a default.
        let bad = random_token().unwrap();
        db::create_session(
            &conn,
            &token_hash(&bad),
            id,
            "c",
            crate::model::now() + 60,
            Some("not json"),
        )
        .unwrap();
        let hdr = vec![("cookie".to_string(), format!("{SESSION_COOKIE}={bad}"))];
        let err = auth.identify(&conn, &hdr, "a").unwrap_err();
        assert!(
            matches!(&err, AuthError::Internal(e) if e.contains("column gitea")),
            "{err:?}"
        );
    }
}

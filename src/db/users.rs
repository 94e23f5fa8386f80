//! Web UI users and their login sessions. The password hashing itself is
//! in `master::auth`; these only store and fetch.

use super::{Conn, Tx};
use crate::model::UserId;
use anyhow::{bail, Result};
use rusqlite::{params, OptionalExtension};

/// A web UI user as `minibot user list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub userid: UserId,
    pub name: String,
    pub created_at: i64,
    pub sessions: i64,
}

/// Adds a user; an existing name is an error.
pub fn add_user(conn: &Tx, name: &str, password_hash: &str) -> Result<UserId> {
    let n = conn
        .raw
        .prepare_cached(
            "INSERT INTO users(name, password_hash, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO NOTHING",
        )?
        .execute(params![name, password_hash, crate::model::now()])?;
    if n == 0 {
        bail!("a user named {name:?} already exists (use `minibot user passwd`)");
    }
    Ok(UserId(conn.raw.last_insert_rowid()))
}

/// Sets a user's password and ends their sessions; false if there is none.
pub fn set_user_password(conn: &Tx, name: &str, password_hash: &str) -> Result<bool> {
    let n = conn
        .raw
        .prepare_cached("UPDATE users SET password_hash = ?2 WHERE name = ?1")?
        .execute(params![name, password_hash])?;
    conn.raw
        .prepare_cached(
            "DELETE FROM sessions WHERE userid = (SELECT userid FROM users WHERE name = ?1)",
        )?
        .execute([name])?;
    Ok(n > 0)
}

/// Removes a user and their sessions; false if there is none.
pub fn remove_user(conn: &Tx, name: &str) -> Result<bool> {
    conn.raw
        .prepare_cached(
            "DELETE FROM sessions WHERE userid = (SELECT userid FROM users WHERE name = ?1)",
        )?
        .execute([name])?;
    let n = conn
        .raw
        .prepare_cached("DELETE FROM users WHERE name = ?1")?
        .execute([name])?;
    Ok(n > 0)
}

pub fn list_users(conn: &Conn) -> Result<Vec<UserRow>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT u.userid, u.name, u.created_at,
                (SELECT count(*) FROM sessions s WHERE s.userid = u.userid AND s.expires_at > ?1)
         FROM users u ORDER BY u.name",
    )?;
    let rows = st.query_map([crate::model::now()], |r| {
        Ok(UserRow {
            userid: r.get(0)?,
            name: r.get(1)?,
            created_at: r.get(2)?,
            sessions: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// (userid, password hash) of a user who logs in with a password (not a
/// Gitea user, whose hash is empty).
pub fn user_password(conn: &Conn, name: &str) -> Result<Option<(UserId, String)>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT userid, password_hash FROM users WHERE name = ?1 AND password_hash != ''",
        )?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// The user row of a Gitea login (`gitea:<login>`, no password), made on
/// its first login.
pub(crate) fn gitea_user(conn: &Tx, name: &str) -> Result<UserId> {
    conn.raw
        .prepare_cached(
            "INSERT INTO users(name, password_hash, created_at) VALUES (?1, '', ?2)
             ON CONFLICT(name) DO NOTHING",
        )?
        .execute(params![name, crate::model::now()])?;
    let id = conn
        .raw
        .prepare_cached("SELECT userid FROM users WHERE name = ?1 AND password_hash = ''")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => Ok(id),
        None => bail!("user {name:?} exists with a password: not a Gitea login"),
    }
}

/// Stores a new session (and forgets expired ones); `gitea`: a Gitea
/// login's membership (JSON, see the `sessions.gitea` column).
pub(crate) fn create_session(
    conn: &Tx,
    token_hash: &str,
    userid: UserId,
    csrf: &str,
    expires_at: i64,
    gitea: Option<&str>,
) -> Result<()> {
    let now = crate::model::now();
    conn.raw
        .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
        .execute([now])?;
    conn.raw
        .prepare_cached(
            "INSERT INTO sessions(token_hash, userid, csrf, created_at, expires_at, gitea)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![token_hash, userid, csrf, now, expires_at, gitea])?;
    Ok(())
}

/// A live session as [`session`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRow {
    pub userid: UserId,
    pub name: String,
    pub csrf: String,
    /// A Gitea login's membership (JSON), None for a password login.
    pub gitea: Option<String>,
}

/// The live session with this token hash.
pub(crate) fn session(conn: &Conn, token_hash: &str, now: i64) -> Result<Option<SessionRow>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT s.userid, u.name, s.csrf, s.gitea FROM sessions s JOIN users u USING (userid)
             WHERE s.token_hash = ?1 AND s.expires_at > ?2",
        )?
        .query_row(params![token_hash, now], |r| {
            Ok(SessionRow {
                userid: r.get(0)?,
                name: r.get(1)?,
                csrf: r.get(2)?,
                gitea: r.get(3)?,
            })
        })
        .optional()?)
}

pub(crate) fn delete_session(conn: &Tx, token_hash: &str) -> Result<()> {
    conn.raw
        .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
        .execute([token_hash])?;
    Ok(())
}

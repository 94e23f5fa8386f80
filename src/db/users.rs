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

/// (userid, password hash) of a user.
pub fn user_password(conn: &Conn, name: &str) -> Result<Option<(UserId, String)>> {
    Ok(conn
        .raw
        .prepare_cached("SELECT userid, password_hash FROM users WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Stores a new session (and forgets expired ones).
pub(crate) fn create_session(
    conn: &Tx,
    token_hash: &str,
    userid: UserId,
    csrf: &str,
    expires_at: i64,
) -> Result<()> {
    let now = crate::model::now();
    conn.raw
        .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
        .execute([now])?;
    conn.raw
        .prepare_cached(
            "INSERT INTO sessions(token_hash, userid, csrf, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![token_hash, userid, csrf, now, expires_at])?;
    Ok(())
}

/// The live session with this token hash: (userid, user name, csrf token).
pub(crate) fn session(
    conn: &Conn,
    token_hash: &str,
    now: i64,
) -> Result<Option<(UserId, String, String)>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT s.userid, u.name, s.csrf FROM sessions s JOIN users u USING (userid)
             WHERE s.token_hash = ?1 AND s.expires_at > ?2",
        )?
        .query_row(params![token_hash, now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?)
}

pub(crate) fn delete_session(conn: &Tx, token_hash: &str) -> Result<()> {
    conn.raw
        .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
        .execute([token_hash])?;
    Ok(())
}

//! SQL for `sessions`: the dashboard's sign-ins. Signing in with an API key
//! makes a session whose random id goes into an HttpOnly cookie; only the
//! id's sha256 is stored (like a key's token), so a copy of the database
//! does not hold a usable cookie. A session acts with its key: it is found
//! only while that key is not revoked and the session has not expired, so
//! revoking a key signs its sessions out at once. Each session has its own
//! CSRF token, which every request that changes something must repeat.

use rusqlite::{Connection, named_params};

use super::keys::{KEY_COLUMNS, key_from_row, token_hash};
use super::{ApiKey, Result, time_column};
use crate::operation::hex;
use crate::time::{Timestamp, to_db};

/// A live session and the key it acts with.
#[derive(Debug, Clone)]
pub struct Session {
    /// The sha256 of the cookie value (what the table is keyed by).
    pub id_hash: String,
    pub key: ApiKey,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex(&bytes)
}

/// Starts a session for `key` lasting until `expires_at`; returns the
/// cookie value (shown once, never stored) and the session.
pub fn session_insert(
    conn: &Connection,
    key: &ApiKey,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<(String, Session)> {
    let cookie = random_hex();
    let session = Session {
        id_hash: session_id_hash(&cookie),
        key: key.clone(),
        csrf_token: random_hex(),
        created_at: now,
        expires_at,
    };
    conn.prepare_cached(
        "INSERT INTO sessions (id_hash, key_id, csrf_token, created_at, expires_at)
         VALUES (:hash, :key, :csrf, :now, :expires)",
    )?
    .execute(named_params! {
        ":hash": session.id_hash, ":key": key.id, ":csrf": session.csrf_token,
        ":now": to_db(now), ":expires": to_db(expires_at),
    })?;
    Ok((cookie, session))
}

/// What a cookie value is stored as.
pub fn session_id_hash(cookie: &str) -> String {
    token_hash(cookie)
}

/// The session stored as `id_hash`, if it has not expired and its key is
/// not revoked.
pub fn session_get(conn: &Connection, id_hash: &str, now: Timestamp) -> Result<Option<Session>> {
    let found: Option<(String, String, String, String)> = conn
        .prepare_cached(
            "SELECT key_id, csrf_token, created_at, expires_at FROM sessions
             WHERE id_hash = ?1 AND expires_at > ?2",
        )?
        .query_row([id_hash, &to_db(now)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some((key_id, csrf_token, created_at, expires_at)) = found else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND revoked_at IS NULL"
    ))?;
    let mut rows = stmt.query([key_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(Session {
        id_hash: id_hash.to_owned(),
        key: key_from_row(row)?,
        csrf_token,
        created_at: time_column(Some(created_at), "created_at")?.expect("some"),
        expires_at: time_column(Some(expires_at), "expires_at")?.expect("some"),
    }))
}

/// Signs a session out; false if there was none.
pub fn session_delete(conn: &Connection, id_hash: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
        .execute([id_hash])?
        == 1)
}

/// Deletes the sessions that expired by `now`; returns how many.
pub fn session_prune(conn: &Connection, now: Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
        .execute([to_db(now)])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewKey, Scope, api_key_insert, api_key_revoke, testing, token_generate};

    fn session_find(conn: &Connection, cookie: &str, now: Timestamp) -> Result<Option<Session>> {
        session_get(conn, &session_id_hash(cookie), now)
    }

    #[test]
    fn a_session_lives_until_it_expires_is_signed_out_or_its_key_is_revoked() {
        let (store, _dir) = testing::store();
        let conn = store.connection().unwrap();
        let now = crate::time::now();
        let later = now + chrono::Duration::hours(1);
        let key = api_key_insert(
            &conn,
            &NewKey {
                name: "ui",
                scopes: &[Scope::Read],
                ..Default::default()
            },
            &token_generate(),
            now,
        )
        .unwrap();
        let (cookie, session) = session_insert(&conn, &key, now, later).unwrap();
        assert_ne!(cookie, session.id_hash, "only the hash is stored");
        let found = session_find(&conn, &cookie, now)
            .unwrap()
            .expect("a live session");
        assert_eq!(found.key.id, key.id);
        assert_eq!(found.csrf_token, session.csrf_token);
        assert!(session_find(&conn, "not-a-session", now).unwrap().is_none());
        assert!(
            session_find(&conn, &cookie, later).unwrap().is_none(),
            "expired"
        );

        assert_eq!(session_prune(&conn, now).unwrap(), 0);
        assert_eq!(session_prune(&conn, later).unwrap(), 1);

        let (cookie, session) = session_insert(&conn, &key, now, later).unwrap();
        assert!(session_delete(&conn, &session.id_hash).unwrap());
        assert!(
            session_find(&conn, &cookie, now).unwrap().is_none(),
            "signed out"
        );

        let (cookie, _) = session_insert(&conn, &key, now, later).unwrap();
        api_key_revoke(&conn, "ui", now).unwrap();
        assert!(
            session_find(&conn, &cookie, now).unwrap().is_none(),
            "key revoked"
        );
    }
}

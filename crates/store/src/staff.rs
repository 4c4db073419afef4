//! Staff users (their password hash, API token, role and practices), the
//! sessions of signed-in browsers, and the audit log of who viewed what.
//!
//! Password hashing (argon2id) is the server's: the store keeps and
//! compares only what it is given.

use enroll_core::{PracticeScope, Role};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::audit::{Audit, AuditTarget};
use crate::tx::{Tx, on_tx};
use crate::{
    Result, StaffUser, Store, StoreError, from_ms, on_pool, opt_from_ms, to_ms, unique_violation,
};

/// API tokens and session cookies are long random strings, so one SHA-256
/// is enough to keep them unusable if the database leaks (passwords, which
/// are guessable, use argon2).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

const STAFF_COLUMNS: &str = "id, username, display_name, role, disabled";

#[derive(sqlx::FromRow)]
struct StaffRow {
    id: i64,
    username: String,
    display_name: String,
    role: String,
    disabled: bool,
}

/// What signing in needs to know about an account.
#[derive(Debug, Clone)]
pub struct StaffAccount {
    pub user: StaffUser,
    pub password_hash: Option<String>,
    pub disabled: bool,
    pub locked_until: Option<Timestamp>,
}

/// A staff user as the admin pages and the CLI list them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StaffListing {
    pub user: StaffUser,
    pub disabled: bool,
    pub practice_codes: Vec<String>,
}

/// A new staff user: the password and token arrive hashed.
pub struct NewStaffUser<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub role: Role,
    pub password_hash: Option<&'a str>,
    pub token_hash: Option<&'a str>,
    pub practice_ids: &'a [i64],
}

/// A change to a staff account. Each is written in one transaction with
/// its audit line (`staff.<key>`, the account its target), so neither is
/// kept without the other.
#[derive(Debug, Clone, Copy)]
pub enum StaffChange<'a> {
    /// Off: its sessions end and its API token stops working.
    Disabled(bool),
    Role(Role),
    /// The practices it works for, replacing the ones it had.
    Practices(&'a [i64]),
    /// A new password hash: the count of wrong passwords starts again and
    /// its sessions end.
    Password(&'a str),
    /// A new API token hash: the old token stops working at once.
    Token(&'a str),
}

impl StaffChange<'_> {
    /// The audit action's ending, and the admin form's word for it.
    pub fn key(&self) -> &'static str {
        match self {
            StaffChange::Disabled(true) => "disable",
            StaffChange::Disabled(false) => "enable",
            StaffChange::Role(Role::Admin) => "make_admin",
            StaffChange::Role(Role::FrontDesk) => "make_front_desk",
            StaffChange::Practices(_) => "practices",
            StaffChange::Password(_) => "reset_password",
            StaffChange::Token(_) => "token",
        }
    }
}

/// When repeated wrong passwords lock an account.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    pub max_failures: i64,
    pub lock_for: SignedDuration,
}

/// A signed-in browser: who, and the value its forms must echo (CSRF).
#[derive(Debug, Clone)]
pub struct StaffSession {
    pub user: StaffUser,
    pub csrf_token: String,
}

impl Store {
    /// Creates a staff user whose API token hashes to `token_hash`, or, when
    /// the username exists, replaces that user's token.
    pub async fn put_staff_user(
        &self,
        username: &str,
        display_name: &str,
        role: Role,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<StaffUser> {
        let row: StaffRow = on_pool!(self, pool => {
            sqlx::query_as(
                "INSERT INTO staff_users (username, display_name, role, api_token_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (username) DO UPDATE SET api_token_hash = excluded.api_token_hash, \
                 display_name = excluded.display_name, role = excluded.role \
                 RETURNING id, username, display_name, role, disabled",
            )
            .bind(username)
            .bind(display_name)
            .bind(role.key())
            .bind(token_hash)
            .bind(to_ms(now))
            .fetch_one(pool)
            .await
        })?;
        self.with_scope(row).await
    }

    /// Adds a staff user, with its practices and the audit line
    /// `staff.add` (by `actor`), in one transaction; a username already
    /// taken is refused.
    pub async fn add_staff_user(
        &self,
        new: &NewStaffUser<'_>,
        actor: &str,
        now: Timestamp,
    ) -> Result<StaffUser> {
        if new.username.trim().is_empty() || new.username.chars().any(char::is_whitespace) {
            return Err(StoreError::Invalid(
                "a username must not be blank or contain spaces".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let inserted: std::result::Result<i64, sqlx::Error> = on_tx!(&mut tx, c => {
            sqlx::query_scalar(
                "INSERT INTO staff_users (username, display_name, role, password_hash, api_token_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(new.username)
            .bind(new.display_name)
            .bind(new.role.key())
            .bind(new.password_hash)
            .bind(new.token_hash)
            .bind(to_ms(now))
            .fetch_one(c)
            .await
        });
        let id = match inserted {
            Err(e) if unique_violation(&e) => {
                return Err(StoreError::Conflict(
                    "a staff user with this username already exists",
                ));
            }
            other => other?,
        };
        tx.set_staff_practices(id, new.practice_ids).await?;
        tx.audit_entry(&staff_audit(actor, "add", id, new.username), now)
            .await?;
        tx.commit().await?;
        self.staff_user(id).await?.ok_or(StoreError::Conflict(
            "the staff user vanished while being added",
        ))
    }

    /// Makes `change` to the account `user_id`, audited (by `actor`) in
    /// the same transaction.
    pub async fn change_staff(
        &self,
        user_id: i64,
        change: StaffChange<'_>,
        actor: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let username: Option<String> = on_tx!(&mut tx, c => {
            sqlx::query_scalar("SELECT username FROM staff_users WHERE id = $1").bind(user_id).fetch_optional(c).await
        })?;
        let username = username.ok_or(StoreError::Conflict("no such staff user"))?;
        match change {
            StaffChange::Disabled(disabled) => {
                on_tx!(&mut tx, c => {
                    sqlx::query("UPDATE staff_users SET disabled = $2 WHERE id = $1")
                        .bind(user_id)
                        .bind(disabled)
                        .execute(c)
                        .await.map(|r| r.rows_affected())
                })?;
                if disabled {
                    tx.end_sessions_of(user_id).await?;
                }
            }
            StaffChange::Role(role) => {
                tx.update_staff(
                    "UPDATE staff_users SET role = $2 WHERE id = $1",
                    user_id,
                    role.key(),
                )
                .await?;
            }
            StaffChange::Practices(practice_ids) => {
                tx.set_staff_practices(user_id, practice_ids).await?;
            }
            StaffChange::Password(hash) => {
                let sql = "UPDATE staff_users SET password_hash = $2, failed_sign_ins = 0, \
                           locked_until = NULL WHERE id = $1";
                tx.update_staff(sql, user_id, hash).await?;
                tx.end_sessions_of(user_id).await?;
            }
            StaffChange::Token(hash) => {
                tx.update_staff(
                    "UPDATE staff_users SET api_token_hash = $2 WHERE id = $1",
                    user_id,
                    hash,
                )
                .await?;
            }
        }
        tx.audit_entry(&staff_audit(actor, change.key(), user_id, &username), now)
            .await?;
        tx.commit().await
    }

    pub async fn staff_user(&self, id: i64) -> Result<Option<StaffUser>> {
        let sql = format!("SELECT {STAFF_COLUMNS} FROM staff_users WHERE id = $1");
        let row: Option<StaffRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await
        })?;
        match row {
            Some(row) => Ok(Some(self.with_scope(row).await?)),
            None => Ok(None),
        }
    }

    /// Every staff user, by username, with the codes of their practices.
    pub async fn staff_users(&self) -> Result<Vec<StaffListing>> {
        let sql = format!("SELECT {STAFF_COLUMNS} FROM staff_users ORDER BY username");
        let rows: Vec<StaffRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).fetch_all(pool).await
        })?;
        let mut listed = Vec::with_capacity(rows.len());
        for row in rows {
            let disabled = row.disabled;
            let codes: Vec<(String,)> = on_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT p.code FROM staff_practices s JOIN practices p ON p.id = s.practice_id \
                     WHERE s.user_id = $1 ORDER BY p.code",
                )
                .bind(row.id)
                .fetch_all(pool)
                .await
            })?;
            listed.push(StaffListing {
                user: self.with_scope(row).await?,
                disabled,
                practice_codes: codes.into_iter().map(|(c,)| c).collect(),
            });
        }
        Ok(listed)
    }

    /// The account behind a username, for signing in.
    pub async fn staff_account(&self, username: &str) -> Result<Option<StaffAccount>> {
        #[derive(sqlx::FromRow)]
        struct AccountRow {
            id: i64,
            username: String,
            display_name: String,
            role: String,
            disabled: bool,
            password_hash: Option<String>,
            locked_until: Option<i64>,
        }
        let row: Option<AccountRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, username, display_name, role, disabled, password_hash, locked_until \
                 FROM staff_users WHERE username = $1",
            )
            .bind(username.trim())
            .fetch_optional(pool)
            .await
        })?;
        let Some(r) = row else { return Ok(None) };
        let user = self
            .with_scope(StaffRow {
                id: r.id,
                username: r.username,
                display_name: r.display_name,
                role: r.role,
                disabled: r.disabled,
            })
            .await?;
        Ok(Some(StaffAccount {
            user,
            password_hash: r.password_hash,
            disabled: r.disabled,
            locked_until: opt_from_ms(r.locked_until)?,
        }))
    }

    /// Counts a wrong password; the one that reaches `lockout.max_failures`
    /// locks the account until `now + lockout.lock_for` and starts the
    /// count again. Returns when the account is locked until, if it is.
    ///
    /// Audited (`staff.sign_in_failed`) in the same transaction.
    pub async fn record_failed_sign_in(
        &self,
        user: &StaffUser,
        lockout: Lockout,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let until = to_ms(now.saturating_add(lockout.lock_for).unwrap_or(now));
        let mut tx = self.begin_write().await?;
        // One statement, so two wrong passwords racing both count.
        let locked_until: Option<i64> = on_tx!(&mut tx, c => {
            sqlx::query_scalar(
                "UPDATE staff_users SET \
                   locked_until = CASE WHEN failed_sign_ins + 1 >= $2 THEN $3 ELSE locked_until END, \
                   failed_sign_ins = CASE WHEN failed_sign_ins + 1 >= $2 THEN 0 ELSE failed_sign_ins + 1 END \
                 WHERE id = $1 RETURNING locked_until",
            )
            .bind(user.id)
            .bind(lockout.max_failures)
            .bind(until)
            .fetch_one(c)
            .await
        })?;
        let audit = Audit::new(
            &user.username,
            "staff.sign_in_failed",
            AuditTarget::StaffUser(user.id),
        );
        tx.audit_entry(&audit, now).await?;
        tx.commit().await?;
        Ok(opt_from_ms(locked_until)?.filter(|t| *t > now))
    }

    /// The enabled staff user holding this API token, if any.
    pub async fn staff_by_token(&self, token: &str) -> Result<Option<StaffUser>> {
        let hash = hash_token(token);
        let sql = format!(
            "SELECT {STAFF_COLUMNS} FROM staff_users WHERE api_token_hash = $1 AND NOT disabled"
        );
        let row: Option<StaffRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&hash)
                .fetch_optional(pool)
                .await
        })?;
        match row {
            Some(row) => Ok(Some(self.with_scope(row).await?)),
            None => Ok(None),
        }
    }

    /// Signs `user` in: the count of wrong passwords starts again, a
    /// session starts for the browser holding a cookie that hashes to
    /// `token_hash`, and `staff.sign_in` is audited, in one transaction.
    pub async fn start_session(
        &self,
        user: &StaffUser,
        token_hash: &str,
        csrf_token: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE staff_users SET failed_sign_ins = 0, locked_until = NULL WHERE id = $1")
                .bind(user.id)
                .execute(c)
                .await.map(|r| r.rows_affected())
        })?;
        on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO staff_sessions (token_hash, user_id, csrf_token, created_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(token_hash)
            .bind(user.id)
            .bind(csrf_token)
            .bind(to_ms(now))
            .execute(c)
            .await.map(|r| r.rows_affected())
        })?;
        let audit = Audit::new(
            &user.username,
            "staff.sign_in",
            AuditTarget::StaffUser(user.id),
        );
        tx.audit_entry(&audit, now).await?;
        tx.commit().await
    }

    /// The session behind a cookie, if it was used within `idle` and its
    /// user is still enabled; its last use becomes `now`. A session idle
    /// longer is ended (automatic sign-out).
    pub async fn session(
        &self,
        token_hash: &str,
        idle: SignedDuration,
        now: Timestamp,
    ) -> Result<Option<StaffSession>> {
        let row: Option<(i64, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT s.user_id, s.csrf_token, s.last_seen_at FROM staff_sessions s \
                 JOIN staff_users u ON u.id = s.user_id WHERE s.token_hash = $1 AND NOT u.disabled",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await
        })?;
        let Some((user_id, csrf_token, last_seen_at)) = row else {
            return Ok(None);
        };
        if from_ms(last_seen_at)?.saturating_add(idle).unwrap_or(now) <= now {
            self.end_session(token_hash).await?;
            return Ok(None);
        }
        on_pool!(self, pool => {
            sqlx::query("UPDATE staff_sessions SET last_seen_at = $2 WHERE token_hash = $1")
                .bind(token_hash)
                .bind(to_ms(now))
                .execute(pool)
                .await.map(|r| r.rows_affected())
        })?;
        Ok(self
            .staff_user(user_id)
            .await?
            .map(|user| StaffSession { user, csrf_token }))
    }

    /// `user` signs a browser out: its session (when it sent its cookie)
    /// ends and `staff.sign_out` is audited, in one transaction.
    pub async fn sign_out(
        &self,
        user: &StaffUser,
        token_hash: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if let Some(token_hash) = token_hash {
            on_tx!(&mut tx, c => {
                sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(c)
                    .await.map(|r| r.rows_affected())
            })?;
        }
        let audit = Audit::new(
            &user.username,
            "staff.sign_out",
            AuditTarget::StaffUser(user.id),
        );
        tx.audit_entry(&audit, now).await?;
        tx.commit().await
    }

    /// Ends a session that was idle too long (no audit line: no one acted).
    async fn end_session(&self, token_hash: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(pool)
                .await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn with_scope(&self, row: StaffRow) -> Result<StaffUser> {
        let role = Role::from_key(&row.role).ok_or_else(|| {
            StoreError::Corrupt(format!("staff user {} role {:?}", row.id, row.role))
        })?;
        let ids: Vec<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT practice_id FROM staff_practices WHERE user_id = $1 ORDER BY practice_id")
                .bind(row.id)
                .fetch_all(pool)
                .await
        })?;
        Ok(StaffUser {
            id: row.id,
            username: row.username,
            display_name: row.display_name,
            role,
            scope: PracticeScope::for_user(role, ids.into_iter().map(|(id,)| id).collect()),
        })
    }
}

/// The audit line of a change to an account: the account is the target,
/// its username in the detail (an account can be renamed by no one, but
/// a line should read without a join).
fn staff_audit(actor: &str, change: &str, user_id: i64, username: &str) -> Audit {
    let detail = serde_json::json!({ "username": username }).to_string();
    Audit::new(
        actor,
        &format!("staff.{change}"),
        AuditTarget::StaffUser(user_id),
    )
    .with_detail(detail)
}

impl Tx {
    /// Replaces the practices a user works for.
    async fn set_staff_practices(&mut self, user_id: i64, practice_ids: &[i64]) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("DELETE FROM staff_practices WHERE user_id = $1")
                .bind(user_id)
                .execute(c)
                .await.map(|r| r.rows_affected())
        })?;
        for practice_id in practice_ids {
            on_tx!(self, c => {
                sqlx::query("INSERT INTO staff_practices (user_id, practice_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(user_id)
                    .bind(practice_id)
                    .execute(c)
                    .await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    async fn update_staff(&mut self, sql: &'static str, user_id: i64, value: &str) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(sql).bind(user_id).bind(value).execute(c).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Signs the user out everywhere.
    async fn end_sessions_of(&mut self, user_id: i64) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("DELETE FROM staff_sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(c)
                .await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

//! The shared token store: one PostgreSQL database behind any number of
//! `fluxgate authz` replicas.
//!
//! Every write transaction locks the single `store_meta` row first
//! (`SELECT … FOR UPDATE`): writers from every replica queue there, so the
//! revisions they assign are gapless and in commit order, and the
//! cross-replica rules in [`super::store::apply_writes`] see each other's
//! effects. A committed write announces the new head with `NOTIFY`, the
//! wake-up replicas follow; the log itself stays the truth (see
//! [`super::registry`]). Every call is bounded by [`CALL_TIMEOUT`], so a
//! database that stops answering turns into an error, never a hang.

use std::future::Future;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::model::{DatabasePermission, TokenRecord};
use super::rows::{self, encode_permissions, revision_i64};
use super::store::{
    Change, ChangeListener, Snapshot, StoreError, StoredToken, TokenStore, Wake, Write,
    WriteOutcome, WriteTx, apply_writes, classify,
};
use super::time::to_millis;

/// The `NOTIFY` channel carrying the new head after each write.
pub const CHANNEL: &str = "fluxgate_token_changes";
/// Longest wait for a connection from the pool (connecting included).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for any one store call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per replica: writes are batched on one, the rest serve the
/// follower, the change-stream replays and the listener.
const MAX_CONNECTIONS: u32 = 8;

/// PostgreSQL-backed [`TokenStore`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    describe: String,
}

impl PgStore {
    /// Connects with `options`, applies schema migrations (under
    /// PostgreSQL's advisory lock, so replicas starting together migrate
    /// once) and gives a new store its identity. `describe` names the
    /// store in messages (never with a password).
    pub async fn connect(options: PgConnectOptions, describe: String) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options.application_name("fluxgate"));
        let store = Self { pool, describe };
        store
            .timed(async {
                super::schema::postgres().run(&store.pool).await?;
                Ok(())
            })
            .await?;
        store
            .timed(async {
                sqlx::query(
                    "INSERT INTO store_meta (id, store_id, head)
                     SELECT 1, $1, COALESCE(MAX(revision), 0) FROM changes
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .execute(&store.pool)
                .await?;
                Ok(())
            })
            .await?;
        Ok(store)
    }

    /// Runs `call` within [`CALL_TIMEOUT`], naming this store in its errors.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => Err(StoreError::Unreachable {
                store: self.describe.clone(),
                reason: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            }),
            Ok(Err(StoreError::Database(e))) => Err(classify(&self.describe, e)),
            Ok(Err(StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)))) => {
                Err(classify(&self.describe, e))
            }
            Ok(r) => r,
        }
    }

    async fn write_once(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut tx = Tx(self.pool.begin().await?);
        let (outcomes, _) = apply_writes(&mut tx, writes).await?;
        match tx.0.commit().await {
            Ok(()) => Ok(outcomes),
            Err(e) => match classify(&self.describe, e) {
                StoreError::Unreachable { store, reason } => {
                    Err(StoreError::CommitUnknown { store, reason })
                }
                other => Err(other),
            },
        }
    }
}

/// A write transaction.
struct Tx(Transaction<'static, Postgres>);

#[async_trait]
impl WriteTx for Tx {
    async fn lock_head(&mut self) -> Result<u64, StoreError> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT head FROM store_meta WHERE id = 1 FOR UPDATE")
                .fetch_optional(&mut *self.0)
                .await?;
        match head {
            Some(h) => rows::head(Some(h)),
            None => Err(StoreError::Corrupt("store_meta has no row".to_owned())),
        }
    }

    async fn set_head(&mut self, head: u64) -> Result<(), StoreError> {
        // The notification is delivered at commit, to every replica that
        // listens; one statement with the head's update.
        sqlx::query(
            "WITH moved AS (UPDATE store_meta SET head = $1 WHERE id = 1)
             SELECT pg_notify($2, $3)",
        )
        .bind(revision_i64(head))
        .bind(CHANNEL)
        .bind(head.to_string())
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn count_tokens(&mut self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&mut *self.0)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn get(&mut self, id: &str) -> Result<Option<StoredToken>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.0)
            .await?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn insert(&mut self, token: &TokenRecord, revision: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, kind, description, permissions, hash, created_at,
                                 expires_at, revoked_at, updated_at, row_revision, expiry_recorded)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, FALSE)",
        )
        .bind(&token.id)
        .bind(token.kind.as_str())
        .bind(&token.description)
        .bind(encode_permissions(&token.permissions))
        .bind(&token.hash.as_bytes()[..])
        .bind(to_millis(token.created_at))
        .bind(token.expires_at.map(to_millis))
        .bind(token.revoked_at.map(to_millis))
        .bind(token.updated_at.map(to_millis))
        .bind(revision_i64(revision))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_all(&mut self, tokens: &[(&TokenRecord, u64)]) -> Result<(), StoreError> {
        if let [(token, revision)] = tokens {
            return self.insert(token, *revision).await;
        }
        let column = |f: &dyn Fn(&TokenRecord) -> Option<i64>| -> Vec<Option<i64>> {
            tokens.iter().map(|(t, _)| f(t)).collect()
        };
        sqlx::query(
            "INSERT INTO tokens (id, kind, description, permissions, hash, created_at,
                                 expires_at, revoked_at, updated_at, row_revision, expiry_recorded)
             SELECT id, kind, description, permissions, hash, created_at,
                    expires_at, revoked_at, updated_at, row_revision, FALSE
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                           $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[])
                 AS t(id, kind, description, permissions, hash, created_at,
                      expires_at, revoked_at, updated_at, row_revision)",
        )
        .bind(tokens.iter().map(|(t, _)| t.id.clone()).collect::<Vec<_>>())
        .bind(
            tokens
                .iter()
                .map(|(t, _)| t.kind.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(
            tokens
                .iter()
                .map(|(t, _)| t.description.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            tokens
                .iter()
                .map(|(t, _)| encode_permissions(&t.permissions))
                .collect::<Vec<_>>(),
        )
        .bind(
            tokens
                .iter()
                .map(|(t, _)| t.hash.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(
            tokens
                .iter()
                .map(|(t, _)| to_millis(t.created_at))
                .collect::<Vec<_>>(),
        )
        .bind(column(&|t| t.expires_at.map(to_millis)))
        .bind(column(&|t| t.revoked_at.map(to_millis)))
        .bind(column(&|t| t.updated_at.map(to_millis)))
        .bind(
            tokens
                .iter()
                .map(|(_, r)| revision_i64(*r))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn update(
        &mut self,
        id: &str,
        permissions: &[DatabasePermission],
        description: Option<&str>,
        at: SystemTime,
        revision: u64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE tokens SET permissions = $1, description = COALESCE($2, description),
                               updated_at = $3, row_revision = $4
              WHERE id = $5 AND kind = 'database' AND revoked_at IS NULL
             RETURNING *",
        )
        .bind(encode_permissions(permissions))
        .bind(description)
        .bind(to_millis(at))
        .bind(revision_i64(revision))
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(row.as_ref().map(rows::token).transpose()?.map(|t| t.record))
    }

    async fn revoke(
        &mut self,
        id: &str,
        at: SystemTime,
        revision: u64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE tokens SET revoked_at = $1, row_revision = $2
              WHERE id = $3 AND revoked_at IS NULL
             RETURNING *",
        )
        .bind(to_millis(at))
        .bind(revision_i64(revision))
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(row.as_ref().map(rows::token).transpose()?.map(|t| t.record))
    }

    async fn other_active_management(
        &mut self,
        id: &str,
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens
              WHERE kind = 'management' AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > $1) AND id <> $2",
        )
        .bind(to_millis(at))
        .bind(id)
        .fetch_one(&mut *self.0)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn mark_expiry_recorded(&mut self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE tokens SET expiry_recorded = TRUE WHERE id = $1")
            .bind(id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_changes(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if let [change] = changes {
            return self.insert_change(change).await;
        }
        sqlx::query(
            "INSERT INTO changes (revision, token_id, kind, token_kind, at)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[])",
        )
        .bind(
            changes
                .iter()
                .map(|c| revision_i64(c.revision))
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.token_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.kind.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.token_kind.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(changes.iter().map(|c| to_millis(c.at)).collect::<Vec<_>>())
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_change(&mut self, change: &Change) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO changes (revision, token_id, kind, token_kind, at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(revision_i64(change.revision))
        .bind(&change.token_id)
        .bind(change.kind.as_str())
        .bind(change.token_kind.as_str())
        .bind(to_millis(change.at))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl TokenStore for PgStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.timed(async {
            // One snapshot for the head and the tokens.
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            let meta: Option<(String, i64)> =
                sqlx::query_as("SELECT store_id, head FROM store_meta WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((store_id, head)) = meta else {
                return Err(StoreError::Corrupt("store_meta has no row".to_owned()));
            };
            let tokens = rows::tokens(
                sqlx::query("SELECT * FROM tokens ORDER BY created_at, id").fetch(&mut *tx),
            )
            .await?;
            tx.commit().await?;
            Ok(Snapshot {
                tokens,
                head_revision: rows::head(Some(head))?,
                store_id,
            })
        })
        .await
    }

    async fn write(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, StoreError> {
        self.timed(self.write_once(writes)).await
    }

    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        self.timed(async {
            let rows =
                sqlx::query("SELECT * FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2")
                    .bind(revision_i64(after))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
            rows.iter().map(rows::change).collect()
        })
        .await
    }

    async fn tokens(&self, ids: &[String]) -> Result<Vec<StoredToken>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.timed(async {
            let rows = sqlx::query("SELECT * FROM tokens WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(rows::token).collect()
        })
        .await
    }

    async fn oldest_revision(&self) -> Result<Option<u64>, StoreError> {
        self.timed(async {
            let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(revision) FROM changes")
                .fetch_one(&self.pool)
                .await?;
            Ok(oldest.and_then(|r| u64::try_from(r).ok()))
        })
        .await
    }

    async fn prune_changes(&self, up_to: u64) -> Result<(), StoreError> {
        self.timed(async {
            sqlx::query("DELETE FROM changes WHERE revision <= $1")
                .bind(revision_i64(up_to))
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>, StoreError> {
        let listener = self
            .timed(async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(CHANNEL).await?;
                Ok(listener)
            })
            .await?;
        Ok(Some(Box::new(Listener {
            listener,
            describe: self.describe.clone(),
        })))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// `LISTEN fluxgate_token_changes` on a connection of the pool.
struct Listener {
    listener: PgListener,
    describe: String,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("store", &self.describe)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ChangeListener for Listener {
    async fn next(&mut self) -> Result<Wake, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(first)) => {
                // Several writes may have announced themselves: one catch-up
                // reads them all, up to the newest head announced.
                let mut head = first.payload().parse::<u64>().ok();
                while let Some(next) = self.listener.next_buffered() {
                    let announced = next.payload().parse::<u64>().ok();
                    head = head.zip(announced).map(|(a, b)| a.max(b));
                }
                Ok(Wake::Announced(head))
            }
            Ok(None) => Ok(Wake::Reconnected),
            Err(e) => Err(classify(&self.describe, e)),
        }
    }
}

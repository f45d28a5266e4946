//! Stored responses (the Responses API's `store: true`): [`ResponseStore`] owns a connection to
//! `wick.db` behind a mutex and answers the create path (save a response, rebuild the chain a
//! `previous_response_id` continues) and the read routes (`GET`/`DELETE /v1/responses/{id}`,
//! its input items a page at a time). Conversations are in [`super::conversations`], on the
//! same store; the pruner that enforces `--response-retention` calls [`ResponseStore::prune`].
//!
//! Every method blocks (SQLite): callers on an async task use `spawn_blocking` (`api::blocking`).
//! Every read is by owner: another API key's id reads as absent. The lock is held for one
//! statement or one transaction, never across a call out of this module.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use super::{Store, StoreError};

/// How long a statement waits for another connection's write lock (the usage writer's).
const BUSY: Duration = Duration::from_secs(5);

/// Rows one pruning statement deletes at most: the lock is given up between batches, so that
/// requests are not held up by a large prune.
const PRUNE_BATCH: i64 = 500;

/// `response_items.kind` of a turn's input items and of its output items.
const INPUT: i64 = 0;
const OUTPUT: i64 = 1;

/// One stored response, as the create path saves it and `GET /v1/responses/{id}` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// `resp_...`.
    pub id: String,
    /// The API key's name, `""` when the server has no keys.
    pub owner: String,
    /// Unix seconds; what retention counts from.
    pub created_at: i64,
    /// `queued`, `in_progress`, `completed`, `incomplete`, `failed` or `cancelled`.
    pub status: String,
    pub previous_response_id: Option<String>,
    pub conversation_id: Option<String>,
    /// The whole Response object, exactly as `GET` returns it; its `output` array is also
    /// stored item by item for [`ResponseStore::history`].
    pub response: Value,
    /// This turn's input items, each with its `id`, in order.
    pub input_items: Vec<Value>,
}

/// A page of items (`input_items`, conversation items).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemPage {
    pub data: Vec<Value>,
    /// More items follow the last one, in the page's order.
    pub has_more: bool,
}

/// The order a page walks the items in: `asc` oldest first, `desc` newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// What a page request finds.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    /// No such response (or conversation) for this owner.
    Missing,
    /// `after` names no item of it.
    UnknownAfter,
    Page(ItemPage),
}

/// Which items a page is taken from: their table and the parent they belong to.
pub(super) struct ItemSet<'a> {
    /// `FROM ... WHERE ...` over the items, with `?1` the parent's id; no `seq` condition.
    pub from: &'static str,
    pub parent: &'a str,
}

struct Inner {
    store: Mutex<Store>,
    path: PathBuf,
}

/// Stored responses and conversations: cheap to clone, one connection shared behind a mutex.
#[derive(Clone)]
pub struct ResponseStore(Arc<Inner>);

impl std::fmt::Debug for ResponseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStore")
            .field("db", &self.0.path)
            .finish()
    }
}

/// How many rows [`ResponseStore::prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub responses: usize,
    pub conversations: usize,
}

impl ResponseStore {
    /// Opens (creating it, migrating it) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Store::open(path, BUSY)?;
        Ok(Self(Arc::new(Inner {
            store: Mutex::new(store),
            path: path.to_path_buf(),
        })))
    }

    /// The database file.
    pub fn db(&self) -> &Path {
        &self.0.path
    }

    /// The connection, for one statement or transaction. A panic while it was held left no
    /// transaction open (rusqlite rolls back on drop), so a poisoned lock is still usable.
    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the connection, naming the file in its error.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut store = self.lock();
        f(&mut store.conn).map_err(|source| StoreError::Sqlite {
            path: self.0.path.clone(),
            source,
        })
    }

    /// Inserts `r`, or replaces the response of the same id and owner (a background response
    /// is saved queued, then again when it ends), with its items.
    pub fn save(&self, r: &StoredResponse) -> Result<(), StoreError> {
        let response = r.response.to_string();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "INSERT INTO responses
                     (id, owner, created_at, status, previous_response_id, conversation_id, response)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET
                     created_at = excluded.created_at, status = excluded.status,
                     previous_response_id = excluded.previous_response_id,
                     conversation_id = excluded.conversation_id, response = excluded.response
                 WHERE responses.owner = excluded.owner",
                params![
                    r.id,
                    r.owner,
                    r.created_at,
                    r.status,
                    r.previous_response_id,
                    r.conversation_id,
                    response
                ],
            )?;
            if n == 0 {
                // The id is another key's: ids are random, so this is a caller's bug; refuse it
                // rather than let one key overwrite another's response.
                return Err(constraint("the response id belongs to another owner"));
            }
            tx.execute(
                "DELETE FROM response_items WHERE response_id = ?1",
                params![r.id],
            )?;
            insert_items(&tx, &r.id, INPUT, &r.input_items)?;
            let output = r.response["output"].as_array().map_or(&[][..], Vec::as_slice);
            insert_items(&tx, &r.id, OUTPUT, output)?;
            tx.commit()
        })
    }

    /// The response `id` of `owner`, with its input items; `None` when there is none.
    pub fn get(&self, owner: &str, id: &str) -> Result<Option<StoredResponse>, StoreError> {
        self.with(|conn| {
            let Some(mut r) = conn
                .query_row(
                    "SELECT id, owner, created_at, status, previous_response_id,
                            conversation_id, response
                     FROM responses WHERE owner = ?1 AND id = ?2",
                    params![owner, id],
                    |row| {
                        Ok(StoredResponse {
                            id: row.get(0)?,
                            owner: row.get(1)?,
                            created_at: row.get(2)?,
                            status: row.get(3)?,
                            previous_response_id: row.get(4)?,
                            conversation_id: row.get(5)?,
                            response: json_column(row, 6)?,
                            input_items: Vec::new(),
                        })
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT item FROM response_items WHERE response_id = ?1 AND kind = ?2
                 ORDER BY seq",
            )?;
            r.input_items = stmt
                .query_map(params![id, INPUT], |row| json_column(row, 0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(r))
        })
    }

    /// The conversation state a follow-up continues: every input and output item of the chain
    /// that ends at `id` (following `previous_response_id` back while the earlier responses
    /// exist for `owner`), oldest first. Instructions are not items. `None`: no response `id`
    /// for this owner.
    pub fn history(&self, owner: &str, id: &str) -> Result<Option<Vec<Value>>, StoreError> {
        self.with(|conn| {
            let exists = conn
                .query_row(
                    "SELECT 1 FROM responses WHERE owner = ?1 AND id = ?2",
                    params![owner, id],
                    |_| Ok(()),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            // The depth bound ends a chain that loops (a caller's bug) instead of the query.
            let mut stmt = conn.prepare_cached(
                "WITH RECURSIVE chain (id, prev, depth) AS (
                     SELECT id, previous_response_id, 0 FROM responses
                     WHERE owner = ?1 AND id = ?2
                     UNION ALL
                     SELECT r.id, r.previous_response_id, c.depth + 1
                     FROM responses r JOIN chain c ON r.id = c.prev
                     WHERE r.owner = ?1 AND c.depth < 100000
                 )
                 SELECT i.item FROM chain c JOIN response_items i ON i.response_id = c.id
                 ORDER BY c.depth DESC, i.kind, i.seq",
            )?;
            let items = stmt
                .query_map(params![owner, id], |row| json_column(row, 0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(items))
        })
    }

    /// Deletes the response `id` of `owner` and its items; `false` when there was none.
    pub fn delete(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let n = conn.execute(
                "DELETE FROM responses WHERE owner = ?1 AND id = ?2",
                params![owner, id],
            )?;
            Ok(n > 0)
        })
    }

    /// A page of the input items of the response `id` of `owner`.
    pub fn input_items(
        &self,
        owner: &str,
        id: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Listing, StoreError> {
        self.with(|conn| {
            let exists = conn
                .query_row(
                    "SELECT 1 FROM responses WHERE owner = ?1 AND id = ?2",
                    params![owner, id],
                    |_| Ok(()),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(Listing::Missing);
            }
            let set = ItemSet {
                from: "FROM response_items WHERE response_id = ?1 AND kind = 0",
                parent: id,
            };
            page(conn, &set, after, limit, order)
        })
    }

    /// Deletes the responses created, and the conversations last updated, before `cutoff`
    /// (unix seconds), with their items; in batches, the lock given up between them.
    pub fn prune(&self, cutoff: i64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let batch = |sql: &str| self.with(|conn| conn.execute(sql, params![cutoff, PRUNE_BATCH]));
        loop {
            let n = batch(
                "DELETE FROM responses WHERE id IN
                     (SELECT id FROM responses WHERE created_at < ?1 LIMIT ?2)",
            )?;
            pruned.responses += n;
            if (n as i64) < PRUNE_BATCH {
                break;
            }
        }
        loop {
            let n = batch(
                "DELETE FROM conversations WHERE id IN
                     (SELECT id FROM conversations WHERE updated_at < ?1 LIMIT ?2)",
            )?;
            pruned.conversations += n;
            if (n as i64) < PRUNE_BATCH {
                break;
            }
        }
        Ok(pruned)
    }
}

/// Inserts `items` as the `kind` items of `response`, numbered from 0.
fn insert_items(
    tx: &Transaction<'_>,
    response: &str,
    kind: i64,
    items: &[Value],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO response_items (response_id, kind, seq, item_id, item)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (seq, item) in items.iter().enumerate() {
        // An item without an id (a caller's bug) still gets a unique one in its row.
        let item_id = item["id"]
            .as_str()
            .map_or_else(|| super::new_id("item_"), str::to_string);
        stmt.execute(params![
            response,
            kind,
            seq as i64,
            item_id,
            item.to_string()
        ])?;
    }
    Ok(())
}

/// A page of `set`: up to `limit` items after the item `after` (exclusive) in `order`.
pub(super) fn page(
    conn: &Connection,
    set: &ItemSet<'_>,
    after: Option<&str>,
    limit: usize,
    order: Order,
) -> rusqlite::Result<Listing> {
    let cursor = match after {
        None => None,
        Some(after) => {
            let sql = format!("SELECT seq {} AND item_id = ?2", set.from);
            match conn
                .query_row(&sql, params![set.parent, after], |r| r.get::<_, i64>(0))
                .optional()?
            {
                Some(seq) => Some(seq),
                None => return Ok(Listing::UnknownAfter),
            }
        }
    };
    let (cmp, dir, start) = match order {
        Order::Asc => (">", "ASC", -1),
        Order::Desc => ("<", "DESC", i64::MAX),
    };
    let sql = format!(
        "SELECT item {} AND seq {cmp} ?2 ORDER BY seq {dir} LIMIT ?3",
        set.from
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    // One more than asked: whether it exists is `has_more`.
    let mut data = stmt
        .query_map(
            params![set.parent, cursor.unwrap_or(start), limit as i64 + 1],
            |row| json_column(row, 0),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(Listing::Page(ItemPage { data, has_more }))
}

/// Column `i` of `row`, a JSON text.
pub(super) fn json_column(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Value> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A constraint failure with `why`.
fn constraint(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
        Some(why.to_string()),
    )
}

#[cfg(test)]
mod tests;

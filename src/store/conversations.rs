//! Stored conversations: a conversation's metadata and its items in order, on the
//! [`ResponseStore`]'s connection (the same blocking rules: callers use `spawn_blocking`).
//! The routes (`/v1/conversations...`) validate metadata and items before they get here; a
//! response created with `conversation` reads [`ResponseStore::conversation_items`] first and
//! [`ResponseStore::append_items`] its input and output once it completes.
//!
//! Every change to a conversation or its items moves its `updated_at`, which retention counts
//! from: a conversation in use is never pruned.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use super::responses::{json_column, page, ItemPage, ItemSet, Listing, Order, ResponseStore};
use super::StoreError;

/// One conversation, without its items.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// `conv_...`.
    pub id: String,
    /// The API key's name, `""` when the server has no keys.
    pub owner: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change to it or its items; retention counts from it.
    pub updated_at: i64,
    /// The metadata object (string values), `{}` when none.
    pub metadata: Value,
}

impl Conversation {
    /// The `conversation` object of the API.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        })
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ResponseStore {
    /// Creates a conversation of `owner` with `metadata` and its first `items` (each with its
    /// `id`), under the new id `id`.
    pub fn create_conversation(
        &self,
        owner: &str,
        id: &str,
        metadata: &Value,
        items: &[Value],
    ) -> Result<Conversation, StoreError> {
        let t = now();
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO conversations (id, owner, created_at, updated_at, metadata)
                 VALUES (?1, ?2, ?3, ?3, ?4)",
                params![id, owner, t, metadata.to_string()],
            )?;
            insert_items(&tx, id, items)?;
            tx.commit()
        })?;
        Ok(Conversation {
            id: id.to_string(),
            owner: owner.to_string(),
            created_at: t,
            updated_at: t,
            metadata: metadata.clone(),
        })
    }

    /// The conversation `id` of `owner`; `None` when there is none.
    pub fn conversation(&self, owner: &str, id: &str) -> Result<Option<Conversation>, StoreError> {
        self.with(|conn| read(conn, owner, id))
    }

    /// Replaces the metadata of the conversation `id` of `owner`; `None` when there is none.
    pub fn update_conversation(
        &self,
        owner: &str,
        id: &str,
        metadata: &Value,
    ) -> Result<Option<Conversation>, StoreError> {
        let t = now();
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE conversations SET metadata = ?3, updated_at = ?4
                 WHERE owner = ?1 AND id = ?2",
                params![owner, id, metadata.to_string(), t],
            )?;
            if n == 0 {
                return Ok(None);
            }
            read(conn, owner, id)
        })
    }

    /// Deletes the conversation `id` of `owner` and its items; `false` when there was none.
    pub fn delete_conversation(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let n = conn.execute(
                "DELETE FROM conversations WHERE owner = ?1 AND id = ?2",
                params![owner, id],
            )?;
            Ok(n > 0)
        })
    }

    /// Appends `items` (each with its `id`) to the conversation `conversation` of `owner`;
    /// `false` when there is no such conversation.
    pub fn add_items(
        &self,
        owner: &str,
        conversation: &str,
        items: &[Value],
    ) -> Result<bool, StoreError> {
        let t = now();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE conversations SET updated_at = ?3 WHERE owner = ?1 AND id = ?2",
                params![owner, conversation, t],
            )?;
            if n == 0 {
                return Ok(false);
            }
            insert_items(&tx, conversation, items)?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// [`ResponseStore::add_items`] for the create path, once a response completes: a
    /// conversation deleted meanwhile takes nothing (and is no error).
    pub fn append_items(
        &self,
        owner: &str,
        conversation: &str,
        items: &[Value],
    ) -> Result<(), StoreError> {
        self.add_items(owner, conversation, items).map(|_| ())
    }

    /// Every item of the conversation, oldest first; `None` when there is no such
    /// conversation for `owner`.
    pub fn conversation_items(
        &self,
        owner: &str,
        conversation: &str,
    ) -> Result<Option<Vec<Value>>, StoreError> {
        self.with(|conn| {
            if read(conn, owner, conversation)?.is_none() {
                return Ok(None);
            }
            let mut stmt = conn.prepare_cached(
                "SELECT item FROM conversation_items WHERE conversation_id = ?1 ORDER BY seq",
            )?;
            let items = stmt
                .query_map(params![conversation], |row| json_column(row, 0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(items))
        })
    }

    /// A page of the conversation's items.
    pub fn list_items(
        &self,
        owner: &str,
        conversation: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Listing, StoreError> {
        self.with(|conn| {
            if read(conn, owner, conversation)?.is_none() {
                return Ok(Listing::Missing);
            }
            let set = ItemSet {
                from: "FROM conversation_items WHERE conversation_id = ?1",
                parent: conversation,
            };
            page(conn, &set, after, limit, order)
        })
    }

    /// The item `item` of the conversation; `None` when either is not there for `owner`.
    pub fn conversation_item(
        &self,
        owner: &str,
        conversation: &str,
        item: &str,
    ) -> Result<Option<Value>, StoreError> {
        self.with(|conn| {
            if read(conn, owner, conversation)?.is_none() {
                return Ok(None);
            }
            conn.query_row(
                "SELECT item FROM conversation_items WHERE conversation_id = ?1 AND item_id = ?2",
                params![conversation, item],
                |row| json_column(row, 0),
            )
            .optional()
        })
    }

    /// Deletes the item `item` of the conversation and returns the conversation: `None` when
    /// there is no such conversation for `owner`, `Some((c, false))` when it has no such item.
    pub fn delete_item(
        &self,
        owner: &str,
        conversation: &str,
        item: &str,
    ) -> Result<Option<(Conversation, bool)>, StoreError> {
        let t = now();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "DELETE FROM conversation_items WHERE item_id = ?2 AND conversation_id =
                     (SELECT id FROM conversations WHERE owner = ?1 AND id = ?3)",
                params![owner, item, conversation],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE conversations SET updated_at = ?3 WHERE owner = ?1 AND id = ?2",
                    params![owner, conversation, t],
                )?;
            }
            let c = read(&tx, owner, conversation)?;
            tx.commit()?;
            Ok(c.map(|c| (c, n > 0)))
        })
    }

    /// A page of `owner`'s conversations (as API objects), last changed first for
    /// [`Order::Desc`]; `search` keeps those with a metadata value containing it (ASCII case
    /// folded, as SQL `LIKE`). `after` is a conversation id: the page starts after it.
    pub fn list_conversations(
        &self,
        owner: &str,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Listing, StoreError> {
        self.with(|conn| list(conn, owner, search, after, limit, order))
    }

    /// Sets the conversation's `updated_at` (tests of retention, and operators' tools).
    pub fn set_conversation_updated_at(
        &self,
        owner: &str,
        id: &str,
        updated_at: i64,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE conversations SET updated_at = ?3 WHERE owner = ?1 AND id = ?2",
                params![owner, id, updated_at],
            )?;
            Ok(n > 0)
        })
    }
}

/// `LIKE` pattern matching values that contain `s` literally.
fn like_pattern(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn list(
    conn: &Connection,
    owner: &str,
    search: Option<&str>,
    after: Option<&str>,
    limit: usize,
    order: Order,
) -> rusqlite::Result<Listing> {
    // The cursor is (updated_at, rowid) of `after`: ids are random, rowids break ties.
    let cursor = match after {
        None => None,
        Some(a) => match conn
            .query_row(
                "SELECT updated_at, rowid FROM conversations WHERE owner = ?1 AND id = ?2",
                params![owner, a],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?
        {
            Some(c) => Some(c),
            None => return Ok(Listing::UnknownAfter),
        },
    };
    let (cmp, dir, start) = match order {
        Order::Asc => (">", "ASC", (i64::MIN, i64::MIN)),
        Order::Desc => ("<", "DESC", (i64::MAX, i64::MAX)),
    };
    let sql = format!(
        "SELECT id, owner, created_at, updated_at, metadata FROM conversations
         WHERE owner = ?1 AND (updated_at, rowid) {cmp} (?2, ?3)
           AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(conversations.metadata)
                                      WHERE CAST(json_each.value AS TEXT) LIKE ?4 ESCAPE '\\'))
         ORDER BY updated_at {dir}, rowid {dir} LIMIT ?5"
    );
    let (t, row) = cursor.unwrap_or(start);
    let pattern = search.filter(|s| !s.is_empty()).map(like_pattern);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut data = stmt
        .query_map(
            params![owner, t, row, pattern, limit as i64 + 1],
            conversation_row,
        )?
        .map(|c| c.map(|c| c.to_json()))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(Listing::Page(ItemPage { data, has_more }))
}

/// The conversation `id` of `owner`, if any.
fn read(conn: &Connection, owner: &str, id: &str) -> rusqlite::Result<Option<Conversation>> {
    conn.query_row(
        "SELECT id, owner, created_at, updated_at, metadata FROM conversations
         WHERE owner = ?1 AND id = ?2",
        params![owner, id],
        conversation_row,
    )
    .optional()
}

/// A row of `SELECT id, owner, created_at, updated_at, metadata FROM conversations`.
fn conversation_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: row.get(0)?,
        owner: row.get(1)?,
        created_at: row.get(2)?,
        updated_at: row.get(3)?,
        metadata: json_column(row, 4)?,
    })
}

/// Appends `items` after the conversation's last item.
fn insert_items(tx: &Transaction<'_>, conversation: &str, items: &[Value]) -> rusqlite::Result<()> {
    let next: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), -1) + 1 FROM conversation_items WHERE conversation_id = ?1",
        params![conversation],
        |r| r.get(0),
    )?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO conversation_items (conversation_id, seq, item_id, item)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (i, item) in items.iter().enumerate() {
        // An item without an id (a caller's bug) still gets a unique one in its row.
        let item_id = item["id"]
            .as_str()
            .map_or_else(|| super::new_id("item_"), str::to_string);
        stmt.execute(params![
            conversation,
            next + i as i64,
            item_id,
            item.to_string()
        ])?;
    }
    Ok(())
}

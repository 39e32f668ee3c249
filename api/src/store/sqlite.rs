//! The embedded SQLite store: one file `luumen.db` in WAL mode, migrations from
//! `api/migrations/*.sql` applied at start and recorded in `schema_version`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use luumen_schemas::report::{Batch, HostResult};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;

use super::*;

/// The database file inside the data dir.
pub const DB_FILE: &str = "luumen.db";

/// The migrations, in order; version N is the N-th entry.
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_initial",
    include_str!("../../migrations/0001_initial.sql"),
)];

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(error.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Backend(format!("json: {error}"))
    }
}

/// SQLite: one writer connection (SQLite has a single writer anyway) and a few read-only
/// connections, which WAL mode lets read while a batch is being written.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
}

const READERS: usize = 4;

fn now() -> String {
    timestamp(Utc::now())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn parse_after(after: Option<&str>) -> StoreResult<Option<i64>> {
    after
        .map(|a| {
            a.parse::<i64>()
                .map_err(|_| StoreError::Invalid("invalid cursor".into()))
        })
        .transpose()
}

fn json_opt(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

impl SqliteStore {
    /// Opens (creating if needed) `DIR/luumen.db` and applies pending migrations.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        let conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "cache_size", -65536)?; // 64 MiB page cache
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut store = SqliteStore {
            conn: Mutex::new(conn),
            readers: Vec::new(),
        };
        store.migrate()?;
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                data_dir.join(DB_FILE),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(10))?;
            reader.pragma_update(None, "cache_size", -16384)?;
            reader.set_prepared_statement_cache_capacity(64);
            store.readers.push(Mutex::new(reader));
        }
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection: a free one if any, else the first.
    fn read(&self) -> MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Ok(guard) = reader.try_lock() {
                return guard;
            }
        }
        match self.readers.first() {
            Some(reader) => reader.lock().unwrap_or_else(|p| p.into_inner()),
            None => self.conn(),
        }
    }

    /// The schema version after migration.
    pub fn schema_version(&self) -> StoreResult<i64> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT ifnull(max(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?)
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.conn();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )?;
        let current: i64 = conn.query_row(
            "SELECT ifnull(max(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        if current > MIGRATIONS.len() as i64 {
            return Err(StoreError::Backend(format!(
                "database schema version {current} is newer than this luumen-api ({})",
                MIGRATIONS.len()
            )));
        }
        for (index, (name, sql)) in MIGRATIONS.iter().enumerate() {
            let version = index as i64 + 1;
            if version <= current {
                continue;
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, now()],
            )?;
            tx.commit()?;
            tracing::info!(version, name, "applied migration");
        }
        Ok(())
    }

    fn host_seq(conn: &Connection, id: &str) -> StoreResult<i64> {
        conn.query_row("SELECT seq FROM hosts WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("host {id:?}")))
    }

    fn check_credential(conn: &Connection, id: Option<&str>) -> StoreResult<()> {
        if let Some(id) = id {
            let exists: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM credentials WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::Conflict(format!(
                    "credential_id: no credential {id:?}"
                )));
            }
        }
        Ok(())
    }

    fn write_groups(tx: &Transaction<'_>, seq: i64, groups: &[String]) -> StoreResult<()> {
        tx.execute("DELETE FROM host_groups WHERE host_seq = ?1", [seq])?;
        let mut insert =
            tx.prepare_cached("INSERT OR IGNORE INTO host_groups (grp, host_seq) VALUES (?1, ?2)")?;
        for group in groups {
            insert.execute(params![group, seq])?;
        }
        Ok(())
    }

    const HOST_COLUMNS: &'static str = "h.seq, h.id, h.address, h.port, h.protocol, h.groups, \
        h.credential_id, h.managed, h.created_at, h.status, h.last_error, h.last_seen, \
        h.received_at, h.os_id";

    fn host_row(row: &rusqlite::Row<'_>, stale_before: &str) -> rusqlite::Result<(i64, Host)> {
        let groups: String = row.get(5)?;
        let last_seen: Option<String> = row.get(11)?;
        let stale = last_seen.as_deref().is_none_or(|seen| seen < stale_before);
        Ok((
            row.get(0)?,
            Host {
                id: row.get(1)?,
                address: row.get(2)?,
                port: row.get(3)?,
                protocol: row.get(4)?,
                groups: serde_json::from_str(&groups).unwrap_or_default(),
                credential_id: row.get(6)?,
                managed: row.get(7)?,
                created_at: row.get(8)?,
                status: row.get(9)?,
                last_error: row.get(10)?,
                last_seen,
                received_at: row.get(12)?,
                os_id: row.get(13)?,
                stale,
            },
        ))
    }

    /// The software id of a package, inserting it when new.
    fn software_id(
        tx: &Transaction<'_>,
        cache: &mut HashMap<SoftwareKey, i64>,
        key: &SoftwareKey,
    ) -> StoreResult<i64> {
        if let Some(id) = cache.get(key) {
            return Ok(*id);
        }
        let found: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM software WHERE name = ?1 AND version = ?2 AND epoch IS ?3 \
                 AND release IS ?4 AND arch IS ?5 AND manager = ?6",
            )?
            .query_row(
                params![
                    key.name,
                    key.version,
                    key.epoch,
                    key.release,
                    key.arch,
                    key.manager
                ],
                |r| r.get(0),
            )
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached(
                    "INSERT INTO software (name, epoch, version, release, arch, manager) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    key.name,
                    key.epoch,
                    key.version,
                    key.release,
                    key.arch,
                    key.manager
                ])?;
                tx.last_insert_rowid()
            }
        };
        cache.insert(key.clone(), id);
        Ok(id)
    }

    fn ingest_result(
        tx: &Transaction<'_>,
        cache: &mut HashMap<SoftwareKey, i64>,
        batch_id: &str,
        result: &HostResult,
        received_at: &str,
    ) -> StoreResult<()> {
        let host_id = result.host.id.as_str();
        let existing: Option<HostStateRow> = tx
            .prepare_cached("SELECT seq, status, last_seen, properties FROM hosts WHERE id = ?1")?
            .query_row([host_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (seq, old_status, old_seen, old_properties) = match existing {
            Some(row) => row,
            None => {
                tx.execute(
                    "INSERT INTO hosts (id, address, protocol, managed, created_at) \
                     VALUES (?1, ?2, ?3, 0, ?4)",
                    params![
                        host_id,
                        Some(result.host.address.as_str()).filter(|a| !a.is_empty()),
                        result.host.protocol.as_str(),
                        received_at
                    ],
                )?;
                (tx.last_insert_rowid(), None, None, None)
            }
        };
        let collected_at = timestamp(result.collected_at);
        let status = result.status.as_str();
        let applied = old_seen
            .as_deref()
            .is_none_or(|seen| collected_at.as_str() >= seen);
        tx.prepare_cached(
            "INSERT INTO collections (host_seq, batch_id, collected_at, received_at, \
             duration_ms, status, errors, applied) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            seq,
            batch_id,
            collected_at,
            received_at,
            result.duration_ms.min(i64::MAX as u64) as i64,
            status,
            serde_json::to_string(&result.errors)?,
            applied
        ])?;
        let collection_id = tx.last_insert_rowid();
        if !applied {
            return Ok(());
        }

        let mut changes: Vec<ChangeRow> = Vec::new();
        if old_status.as_deref() != Some(status) {
            changes.push((
                "status_changed",
                "status".into(),
                old_status.map(|s| Value::String(s).to_string()),
                Some(Value::String(status.into()).to_string()),
            ));
        }

        // Latest properties: what this result collected, and the previous value of any
        // property it could not collect. Packages live in host_software, not in this JSON.
        let old_props: serde_json::Map<String, Value> = old_properties
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        let mut new_props = old_props.clone();
        // Everything but the packages, which live in host_software. A new property is a
        // compile error here, on purpose.
        let p = &result.properties;
        let without_packages = luumen_properties::Properties {
            os: p.os.clone(),
            hardware: p.hardware.clone(),
            packages: None,
            selinux: p.selinux.clone(),
            tuned: p.tuned.clone(),
            cron: p.cron.clone(),
            services: p.services.clone(),
            hotfixes: p.hotfixes.clone(),
            // The latest process list is kept, but never compared (see `comparable`).
            processes: p.processes.clone(),
        };
        let Value::Object(collected) = serde_json::to_value(&without_packages)? else {
            return Err(StoreError::Backend("properties are not an object".into()));
        };
        let mut raw_properties = collected.clone();
        if let Some(count) = p.packages.as_ref().map(Vec::len) {
            raw_properties.insert("packages_count".into(), Value::from(count));
        }
        if result.status.is_collected() {
            for (name, value) in collected {
                let comparable = |v: &Value| {
                    if name == "processes" {
                        // Processes come and go every cycle: not a change worth an event.
                        return Value::Null;
                    }
                    let mut v = v.clone();
                    if let Some(os) = v.as_object_mut() {
                        if name == "os" {
                            os.remove("uptime_seconds");
                        }
                    }
                    v
                };
                match old_props.get(&name) {
                    Some(old) if comparable(old) == comparable(&value) => {}
                    old => changes.push((
                        "property_changed",
                        name.clone(),
                        old.map(Value::to_string),
                        Some(value.to_string()),
                    )),
                }
                new_props.insert(name, value);
            }
        }

        if let (true, Some(packages)) = (result.status.is_collected(), &result.properties.packages)
        {
            let mut new_ids = HashSet::with_capacity(packages.len());
            for package in packages {
                let key = SoftwareKey {
                    name: package.name.clone(),
                    epoch: package.epoch.map(i64::from),
                    version: package.version.clone(),
                    release: package.release.clone(),
                    arch: package.arch.clone(),
                    manager: serde_json::to_value(package.manager)?
                        .as_str()
                        .unwrap_or("unknown")
                        .to_owned(),
                };
                new_ids.insert(Self::software_id(tx, cache, &key)?);
            }
            let old_ids: HashSet<i64> = tx
                .prepare_cached("SELECT software_id FROM host_software WHERE host_seq = ?1")?
                .query_map([seq], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let added: Vec<i64> = new_ids.difference(&old_ids).copied().collect();
            let removed: Vec<i64> = old_ids.difference(&new_ids).copied().collect();
            if old_ids.is_empty() {
                if !added.is_empty() {
                    changes.push((
                        "packages_baseline",
                        "packages".into(),
                        None,
                        Some(added.len().to_string()),
                    ));
                }
            } else {
                package_changes(tx, &added, &removed, &mut changes)?;
            }
            let mut delete = tx.prepare_cached(
                "DELETE FROM host_software WHERE host_seq = ?1 AND software_id = ?2",
            )?;
            for id in &removed {
                delete.execute(params![seq, id])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO host_software (host_seq, software_id) VALUES (?1, ?2)",
            )?;
            for id in &added {
                insert.execute(params![seq, id])?;
            }
        }

        let mut insert_change = tx.prepare_cached(
            "INSERT INTO changes (collection_id, host_seq, kind, subject, old_value, new_value) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (kind, subject, old, new) in &changes {
            insert_change.execute(params![collection_id, seq, kind, subject, old, new])?;
        }

        let last_error = result
            .errors
            .iter()
            .find(|e| e.property.is_none())
            .or(result.errors.first())
            .map(|e| match &e.property {
                Some(property) => format!("{property}: {} ({})", e.message, e.kind),
                None => format!("{} ({})", e.message, e.kind),
            });
        let os_id = new_props
            .get("os")
            .and_then(|os| os.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        // The latest result as received, for debugging, except the package list.
        let raw = serde_json::json!({
            "host": result.host,
            "collected_at": result.collected_at,
            "duration_ms": result.duration_ms,
            "status": result.status,
            "properties": raw_properties,
            "errors": result.errors,
        });
        tx.prepare_cached(
            "UPDATE hosts SET status = ?2, last_error = ?3, last_seen = ?4, received_at = ?5, \
             os_id = ?6, properties = ?7, raw_result = ?8 WHERE seq = ?1",
        )?
        .execute(params![
            seq,
            status,
            last_error,
            collected_at,
            received_at,
            os_id,
            Value::Object(new_props).to_string(),
            raw.to_string()
        ])?;
        Ok(())
    }
}

/// seq, status, last_seen, properties of a host.
type HostStateRow = (i64, Option<String>, Option<String>, Option<String>);

type ChangeRow = (&'static str, String, Option<String>, Option<String>);

/// The identity of a software row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SoftwareKey {
    name: String,
    epoch: Option<i64>,
    version: String,
    release: Option<String>,
    arch: Option<String>,
    manager: String,
}

fn evr(epoch: Option<i64>, version: &str, release: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(epoch) = epoch {
        out.push_str(&format!("{epoch}:"));
    }
    out.push_str(version);
    if let Some(release) = release {
        out.push('-');
        out.push_str(release);
    }
    out
}

/// Added/removed software ids → events; one removal and one addition of the same
/// (manager, name, arch) become one `package_changed`.
fn package_changes(
    tx: &Transaction<'_>,
    added: &[i64],
    removed: &[i64],
    changes: &mut Vec<ChangeRow>,
) -> StoreResult<()> {
    let mut lookup = tx.prepare_cached(
        "SELECT name, epoch, version, release, arch, manager FROM software WHERE id = ?1",
    )?;
    let mut describe = |id: i64| -> StoreResult<((String, String, String), String)> {
        Ok(lookup.query_row([id], |r| {
            let name: String = r.get(0)?;
            let arch: Option<String> = r.get(4)?;
            let manager: String = r.get(5)?;
            let version: String = r.get(2)?;
            let release: Option<String> = r.get(3)?;
            Ok((
                (manager, name, arch.unwrap_or_default()),
                evr(r.get(1)?, &version, release.as_deref()),
            ))
        })?)
    };
    let mut gone: HashMap<(String, String, String), Vec<String>> = HashMap::new();
    for id in removed {
        let (key, version) = describe(*id)?;
        gone.entry(key).or_default().push(version);
    }
    let mut new: HashMap<(String, String, String), Vec<String>> = HashMap::new();
    for id in added {
        let (key, version) = describe(*id)?;
        new.entry(key).or_default().push(version);
    }
    let package_json = |key: &(String, String, String), version: &str| {
        serde_json::json!({"manager": key.0, "arch": (!key.2.is_empty()).then_some(&key.2), "version": version})
            .to_string()
    };
    for (key, versions) in &new {
        match gone.remove(key) {
            Some(old) if old.len() == 1 && versions.len() == 1 => changes.push((
                "package_changed",
                key.1.clone(),
                Some(package_json(key, &old[0])),
                Some(package_json(key, &versions[0])),
            )),
            old => {
                for version in old.into_iter().flatten() {
                    changes.push((
                        "package_removed",
                        key.1.clone(),
                        Some(package_json(key, &version)),
                        None,
                    ));
                }
                for version in versions {
                    changes.push((
                        "package_added",
                        key.1.clone(),
                        None,
                        Some(package_json(key, version)),
                    ));
                }
            }
        }
    }
    for (key, versions) in gone {
        for version in versions {
            changes.push((
                "package_removed",
                key.1.clone(),
                Some(package_json(&key, &version)),
                None,
            ));
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn authenticate(&self, key_hash: &str) -> StoreResult<Option<ApiKeyInfo>> {
        let conn = self.read();
        let row: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT id, role FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
            )?
            .query_row([key_hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(id, role)| ApiKeyInfo {
            id,
            role: if role == "admin" {
                Role::Admin
            } else {
                Role::Agent
            },
        }))
    }

    fn create_api_key(&self, role: Role, key_hash: &str) -> StoreResult<String> {
        let conn = self.conn();
        let id = new_id();
        conn.execute(
            "INSERT INTO api_keys (id, role, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, role.as_str(), key_hash, now()],
        )?;
        Ok(id)
    }

    fn ingest(
        &self,
        batch: &Batch,
        api_key_id: &str,
        received_at: DateTime<Utc>,
    ) -> StoreResult<IngestOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let batch_id = batch.batch_id.to_string();
        let received_at = timestamp(received_at);
        let inserted = tx.execute(
            "INSERT INTO batches (batch_id, agent_id, api_key_id, sent_at, received_at, results) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (batch_id) DO NOTHING",
            params![
                batch_id,
                batch.agent_id,
                api_key_id,
                timestamp(batch.sent_at),
                received_at,
                batch.results.len() as i64
            ],
        )?;
        if inserted == 0 {
            tx.commit()?;
            return Ok(IngestOutcome {
                batch_id,
                duplicate: true,
                results: batch.results.len(),
            });
        }
        let mut cache = HashMap::new();
        for result in &batch.results {
            Self::ingest_result(&tx, &mut cache, &batch_id, result, &received_at)?;
        }
        tx.commit()?;
        Ok(IngestOutcome {
            batch_id,
            duplicate: false,
            results: batch.results.len(),
        })
    }

    fn create_host(&self, host: &HostSpec) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::check_credential(&tx, host.credential_id.as_deref())?;
        let existing: Option<bool> = tx
            .query_row("SELECT managed FROM hosts WHERE id = ?1", [&host.id], |r| {
                r.get(0)
            })
            .optional()?;
        let groups = serde_json::to_string(&host.groups)?;
        match existing {
            Some(true) => {
                return Err(StoreError::Conflict(format!(
                    "host {:?} already exists",
                    host.id
                )))
            }
            // A host first seen in a report becomes managed, keeping its history.
            Some(false) => {
                tx.execute(
                    "UPDATE hosts SET address = ?2, port = ?3, protocol = ?4, groups = ?5, \
                     credential_id = ?6, managed = 1 WHERE id = ?1",
                    params![
                        host.id,
                        host.address,
                        host.port,
                        host.protocol.as_str(),
                        groups,
                        host.credential_id
                    ],
                )?;
            }
            None => {
                tx.execute(
                    "INSERT INTO hosts (id, address, port, protocol, groups, credential_id, \
                     managed, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)",
                    params![
                        host.id,
                        host.address,
                        host.port,
                        host.protocol.as_str(),
                        groups,
                        host.credential_id,
                        now()
                    ],
                )?;
            }
        }
        let seq = Self::host_seq(&tx, &host.id)?;
        Self::write_groups(&tx, seq, &host.groups)?;
        tx.commit()?;
        Ok(())
    }

    fn update_host(&self, host: &HostSpec) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::check_credential(&tx, host.credential_id.as_deref())?;
        let seq = Self::host_seq(&tx, &host.id)?;
        tx.execute(
            "UPDATE hosts SET address = ?2, port = ?3, protocol = ?4, groups = ?5, \
             credential_id = ?6, managed = 1 WHERE seq = ?1",
            params![
                seq,
                host.address,
                host.port,
                host.protocol.as_str(),
                serde_json::to_string(&host.groups)?,
                host.credential_id
            ],
        )?;
        Self::write_groups(&tx, seq, &host.groups)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_host(&self, id: &str) -> StoreResult<()> {
        let conn = self.conn();
        let deleted = conn.execute("DELETE FROM hosts WHERE id = ?1", [id])?;
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("host {id:?}")));
        }
        Ok(())
    }

    fn get_host(&self, id: &str, stale_before: &str) -> StoreResult<HostDetail> {
        let conn = self.read();
        let row = conn
            .query_row(
                &format!(
                    "SELECT {}, h.properties FROM hosts h WHERE h.id = ?1",
                    Self::HOST_COLUMNS
                ),
                [id],
                |r| {
                    Ok((
                        Self::host_row(r, stale_before)?,
                        r.get::<_, Option<String>>(14)?,
                    ))
                },
            )
            .optional()?;
        let Some(((seq, host), properties)) = row else {
            return Err(StoreError::NotFound(format!("host {id:?}")));
        };
        let mut properties: Option<Value> = properties.and_then(|p| serde_json::from_str(&p).ok());
        let mut stmt = conn.prepare_cached(
            "SELECT s.name, s.epoch, s.version, s.release, s.arch, s.manager \
             FROM host_software hs JOIN software s ON s.id = hs.software_id \
             WHERE hs.host_seq = ?1 ORDER BY s.name, s.version",
        )?;
        let packages: Vec<Value> = stmt
            .query_map([seq], |r| {
                Ok(serde_json::json!({
                    "name": r.get::<_, String>(0)?,
                    "epoch": r.get::<_, Option<i64>>(1)?,
                    "version": r.get::<_, String>(2)?,
                    "release": r.get::<_, Option<String>>(3)?,
                    "arch": r.get::<_, Option<String>>(4)?,
                    "manager": r.get::<_, String>(5)?,
                }))
            })?
            .collect::<Result<_, _>>()?;
        if !packages.is_empty() {
            if let Some(Value::Object(map)) = properties.as_mut() {
                map.insert("packages".into(), Value::Array(packages));
            }
        }
        Ok(HostDetail { host, properties })
    }

    fn list_hosts(
        &self,
        filter: &HostFilter,
        after: Option<&str>,
        limit: u32,
        stale_before: &str,
    ) -> StoreResult<Page<Host>> {
        let after = parse_after(after)?.unwrap_or(0);
        let mut sql = format!(
            "SELECT {} FROM hosts h WHERE h.seq > ?1",
            Self::HOST_COLUMNS
        );
        let mut args: Vec<rusqlite::types::Value> = vec![after.into()];
        let mut bind = |sql: &mut String, clause: &str, value: rusqlite::types::Value| {
            args.push(value);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(status) = &filter.status {
            bind(&mut sql, " AND h.status = ?", status.clone().into());
        }
        if let Some(os_id) = &filter.os_id {
            bind(&mut sql, " AND h.os_id = ?", os_id.clone().into());
        }
        if let Some(group) = &filter.group {
            bind(
                &mut sql,
                " AND EXISTS (SELECT 1 FROM host_groups g WHERE g.grp = ? AND g.host_seq = h.seq)",
                group.clone().into(),
            );
        }
        if let Some(package) = &filter.package {
            bind(
                &mut sql,
                " AND EXISTS (SELECT 1 FROM software s JOIN host_software hs \
                 ON hs.software_id = s.id WHERE s.name = ? AND hs.host_seq = h.seq)",
                package.clone().into(),
            );
        }
        match filter.stale {
            Some(true) => bind(
                &mut sql,
                " AND (h.last_seen IS NULL OR h.last_seen < ?)",
                stale_before.to_owned().into(),
            ),
            Some(false) => bind(
                &mut sql,
                " AND h.last_seen >= ?",
                stale_before.to_owned().into(),
            ),
            None => {}
        }
        bind(&mut sql, " ORDER BY h.seq LIMIT ?", i64::from(limit).into());
        let conn = self.read();
        let mut stmt = conn.prepare(&sql)?;
        let rows: Vec<(i64, Host)> = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Self::host_row(r, stale_before)
            })?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|(seq, _)| seq.to_string()))
            .flatten();
        Ok((rows.into_iter().map(|(_, h)| h).collect(), next))
    }

    fn host_history(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Collection>> {
        let conn = self.read();
        let seq = Self::host_seq(&conn, id)?;
        let after = parse_after(after)?.unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.batch_id, c.collected_at, c.received_at, c.duration_ms, c.status, \
             c.errors, c.applied, (SELECT count(*) FROM changes x WHERE x.collection_id = c.id) \
             FROM collections c WHERE c.host_seq = ?1 AND c.id < ?2 ORDER BY c.id DESC LIMIT ?3",
        )?;
        let rows: Vec<Collection> = stmt
            .query_map(params![seq, after, limit], |r| {
                Ok(Collection {
                    id: r.get(0)?,
                    batch_id: r.get(1)?,
                    collected_at: r.get(2)?,
                    received_at: r.get(3)?,
                    duration_ms: r.get(4)?,
                    status: r.get(5)?,
                    errors: json_opt(r.get(6)?).unwrap_or(Value::Array(vec![])),
                    applied: r.get(7)?,
                    changes: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|c| c.id.to_string()))
            .flatten();
        Ok((rows, next))
    }

    fn host_changes(&self, id: &str, after: Option<&str>, limit: u32) -> StoreResult<Page<Change>> {
        let conn = self.read();
        let seq = Self::host_seq(&conn, id)?;
        let after = parse_after(after)?.unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT x.id, x.collection_id, c.collected_at, x.kind, x.subject, x.old_value, \
             x.new_value FROM changes x JOIN collections c ON c.id = x.collection_id \
             WHERE x.host_seq = ?1 AND x.id < ?2 ORDER BY x.id DESC LIMIT ?3",
        )?;
        let rows: Vec<Change> = stmt
            .query_map(params![seq, after, limit], |r| {
                Ok(Change {
                    id: r.get(0)?,
                    collection_id: r.get(1)?,
                    collected_at: r.get(2)?,
                    kind: r.get(3)?,
                    subject: r.get(4)?,
                    old_value: json_opt(r.get(5)?),
                    new_value: json_opt(r.get(6)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|c| c.id.to_string()))
            .flatten();
        Ok((rows, next))
    }

    fn config_hosts(&self) -> StoreResult<Vec<HostSpec>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, address, port, protocol, groups, credential_id FROM hosts \
             WHERE managed = 1 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<u16>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, address, port, protocol, groups, credential_id)| {
                Ok(HostSpec {
                    id,
                    address,
                    port,
                    protocol: serde_json::from_value(Value::String(protocol))?,
                    groups: serde_json::from_str(&groups)?,
                    credential_id,
                })
            })
            .collect()
    }

    fn create_credential(&self, c: &SealedCredential) -> StoreResult<()> {
        let conn = self.conn();
        let result = conn.execute(
            "INSERT INTO credentials (id, name, username, password_enc, private_key_enc, \
             passphrase_enc, sudo, scope, owner_key_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                c.id,
                c.name,
                c.username,
                c.password_enc,
                c.private_key_enc,
                c.passphrase_enc,
                c.sudo,
                c.scope,
                c.owner_key_id,
                now()
            ],
        );
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!(
                    "credential {:?} already exists",
                    c.id
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    fn list_credentials(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<CredentialMeta>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, username, password_enc IS NOT NULL, private_key_enc IS NOT NULL, \
             passphrase_enc IS NOT NULL, sudo, scope, created_at FROM credentials \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows: Vec<CredentialMeta> = stmt
            .query_map(params![after.unwrap_or(""), limit], |r| {
                Ok(CredentialMeta {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    username: r.get(2)?,
                    has_password: r.get(3)?,
                    has_private_key: r.get(4)?,
                    has_passphrase: r.get(5)?,
                    sudo: r.get(6)?,
                    scope: r.get(7)?,
                    created_at: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|c| c.id.clone()))
            .flatten();
        Ok((rows, next))
    }

    fn delete_credential(&self, id: &str) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx.execute("DELETE FROM credentials WHERE id = ?1", [id])?;
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("credential {id:?}")));
        }
        tx.execute(
            "DELETE FROM settings WHERE key = 'default_credential_id' AND value = ?1",
            [id],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn sealed_credential(&self, id: &str) -> StoreResult<Option<SealedCredential>> {
        let conn = self.read();
        let row = conn
            .prepare_cached(
                "SELECT id, name, username, password_enc, private_key_enc, passphrase_enc, sudo, \
                 scope, owner_key_id FROM credentials WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok(SealedCredential {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    username: r.get(2)?,
                    password_enc: r.get(3)?,
                    private_key_enc: r.get(4)?,
                    passphrase_enc: r.get(5)?,
                    sudo: r.get(6)?,
                    scope: r.get(7)?,
                    owner_key_id: r.get(8)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    fn settings(&self) -> StoreResult<Settings> {
        let conn = self.read();
        let get = |key: &str| -> StoreResult<Option<String>> {
            Ok(conn
                .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?)
        };
        Ok(Settings {
            interval_seconds: get("schedule_interval_seconds")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(3600),
            default_credential_id: get("default_credential_id")?,
        })
    }

    fn set_default_credential(&self, id: Option<&str>) -> StoreResult<()> {
        let conn = self.conn();
        match id {
            Some(id) => {
                Self::check_credential(&conn, Some(id))?;
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES ('default_credential_id', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [id],
                )?;
            }
            None => {
                conn.execute(
                    "DELETE FROM settings WHERE key = 'default_credential_id'",
                    [],
                )?;
            }
        }
        Ok(())
    }

    fn set_schedule(&self, interval_seconds: u64) -> StoreResult<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES ('schedule_interval_seconds', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [interval_seconds.to_string()],
        )?;
        Ok(())
    }

    fn audit(
        &self,
        api_key_id: Option<&str>,
        action: &str,
        target: Option<&str>,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO audit (at, api_key_id, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![now(), api_key_id, action, target, detail])?;
        Ok(())
    }

    fn list_audit(&self, after: Option<&str>, limit: u32) -> StoreResult<Page<AuditEntry>> {
        let conn = self.read();
        let after = parse_after(after)?.unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, api_key_id, action, target, detail FROM audit WHERE id < ?1 \
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows: Vec<AuditEntry> = stmt
            .query_map(params![after, limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    api_key_id: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|a| a.id.to_string()))
            .flatten();
        Ok((rows, next))
    }

    fn software_versions(
        &self,
        name: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<SoftwareVersion>> {
        let conn = self.read();
        let after = parse_after(after)?.unwrap_or(0);
        let mut stmt = conn.prepare_cached(
            "SELECT s.id, s.name, s.epoch, s.version, s.release, s.arch, s.manager, \
             (SELECT count(*) FROM host_software hs WHERE hs.software_id = s.id) \
             FROM software s WHERE s.name = ?1 AND s.id > ?2 ORDER BY s.id LIMIT ?3",
        )?;
        let rows: Vec<(i64, SoftwareVersion)> = stmt
            .query_map(params![name, after, limit], |r| {
                Ok((
                    r.get(0)?,
                    SoftwareVersion {
                        name: r.get(1)?,
                        epoch: r.get(2)?,
                        version: r.get(3)?,
                        release: r.get(4)?,
                        arch: r.get(5)?,
                        manager: r.get(6)?,
                        hosts: r.get(7)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|(id, _)| id.to_string()))
            .flatten();
        Ok((
            rows.into_iter()
                .map(|(_, v)| v)
                .filter(|v| v.hosts > 0)
                .collect(),
            next,
        ))
    }

    fn software_hosts(
        &self,
        name: &str,
        version: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<SoftwareHost>> {
        let conn = self.read();
        let (after_seq, after_id) = match after {
            None => (0, 0),
            Some(a) => a
                .split_once('.')
                .and_then(|(h, s)| Some((h.parse::<i64>().ok()?, s.parse::<i64>().ok()?)))
                .ok_or_else(|| StoreError::Invalid("invalid cursor".into()))?,
        };
        let mut stmt = conn.prepare_cached(
            "SELECT h.seq, s.id, h.id, s.epoch, s.version, s.release, s.arch, s.manager \
             FROM software s JOIN host_software hs ON hs.software_id = s.id \
             JOIN hosts h ON h.seq = hs.host_seq \
             WHERE s.name = ?1 AND (h.seq > ?2 OR (h.seq = ?2 AND s.id > ?5)) \
               AND (?3 IS NULL OR s.version = ?3 \
               OR s.version || '-' || ifnull(s.release, '') = ?3) \
             ORDER BY h.seq, s.id LIMIT ?4",
        )?;
        let rows: Vec<(String, SoftwareHost)> = stmt
            .query_map(params![name, after_seq, version, limit, after_id], |r| {
                Ok((
                    format!("{}.{}", r.get::<_, i64>(0)?, r.get::<_, i64>(1)?),
                    SoftwareHost {
                        host_id: r.get(2)?,
                        epoch: r.get(3)?,
                        version: r.get(4)?,
                        release: r.get(5)?,
                        arch: r.get(6)?,
                        manager: r.get(7)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|(key, _)| key.clone()))
            .flatten();
        Ok((rows.into_iter().map(|(_, h)| h).collect(), next))
    }
}

impl SqliteStore {
    /// A raw settings value (internal keys such as the master key check).
    pub fn raw_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let conn = self.read();
        let value = conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(value)
    }

    /// Sets a raw settings value.
    pub fn set_raw_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

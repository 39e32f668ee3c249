-- luumen-api schema, version 1. Timestamps are RFC 3339 UTC text with microseconds and `Z`,
-- so they compare correctly as text.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('agent', 'admin')),
    key_hash    TEXT NOT NULL UNIQUE,       -- hex SHA-256 of the key; the key itself is never stored
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,                -- 'schedule_interval_seconds', 'default_credential_id'
    value  TEXT NOT NULL
);

CREATE TABLE credentials (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    username        TEXT NOT NULL,
    password_enc    BLOB,                   -- AES-256-GCM: nonce(12) || ciphertext || tag
    private_key_enc BLOB,
    passphrase_enc  BLOB,
    sudo            INTEGER NOT NULL DEFAULT 1,
    scope           TEXT NOT NULL CHECK (scope IN ('workspace', 'personal')),
    owner_key_id    TEXT,                   -- the admin key that created it (personal scope)
    created_at      TEXT NOT NULL
);

CREATE TABLE hosts (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,   -- keyset cursor, never reused
    id             TEXT NOT NULL UNIQUE,
    address        TEXT,
    port           INTEGER,
    protocol       TEXT NOT NULL CHECK (protocol IN ('ssh', 'winrm', 'local')),
    groups         TEXT NOT NULL DEFAULT '[]',          -- JSON array, mirrored in host_groups
    credential_id  TEXT REFERENCES credentials(id) ON DELETE SET NULL,
    managed        INTEGER NOT NULL DEFAULT 1,          -- 0: first seen in a report, not in /config
    created_at     TEXT NOT NULL,
    -- latest state
    status         TEXT,
    last_error     TEXT,
    last_seen      TEXT,                                -- collected_at of the latest result
    received_at    TEXT,
    os_id          TEXT,
    properties     TEXT,                                -- JSON, latest known properties
    raw_result     TEXT                                 -- JSON of the latest result, for debugging
);
CREATE INDEX hosts_by_status ON hosts(status, seq);
CREATE INDEX hosts_by_os ON hosts(os_id, seq);
CREATE INDEX hosts_by_last_seen ON hosts(last_seen);

CREATE TABLE host_groups (
    grp       TEXT NOT NULL,
    host_seq  INTEGER NOT NULL REFERENCES hosts(seq) ON DELETE CASCADE,
    PRIMARY KEY (grp, host_seq)
) WITHOUT ROWID;
CREATE INDEX host_groups_by_host ON host_groups(host_seq);

CREATE TABLE software (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL,
    epoch    INTEGER,
    version  TEXT NOT NULL,
    release  TEXT,
    arch     TEXT,
    manager  TEXT NOT NULL
);
CREATE UNIQUE INDEX software_identity
    ON software(name, version, ifnull(epoch, -1), ifnull(release, ''), ifnull(arch, ''), manager);

CREATE TABLE host_software (
    host_seq     INTEGER NOT NULL REFERENCES hosts(seq) ON DELETE CASCADE,
    software_id  INTEGER NOT NULL REFERENCES software(id),
    PRIMARY KEY (host_seq, software_id)
) WITHOUT ROWID;
CREATE INDEX host_software_by_software ON host_software(software_id, host_seq);

CREATE TABLE batches (
    batch_id     TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL,
    api_key_id   TEXT NOT NULL,
    sent_at      TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    results      INTEGER NOT NULL
);

-- One row per host result: the history (what changed is in `changes`, not a copy of the result).
CREATE TABLE collections (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    host_seq      INTEGER NOT NULL REFERENCES hosts(seq) ON DELETE CASCADE,
    batch_id      TEXT NOT NULL REFERENCES batches(batch_id),
    collected_at  TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    duration_ms   INTEGER NOT NULL,
    status        TEXT NOT NULL,
    errors        TEXT NOT NULL DEFAULT '[]',            -- JSON array of the result's errors
    applied       INTEGER NOT NULL                       -- 0: older than the host's latest, state untouched
);
CREATE INDEX collections_by_host ON collections(host_seq, id);

CREATE TABLE changes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id  INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    host_seq       INTEGER NOT NULL REFERENCES hosts(seq) ON DELETE CASCADE,
    kind           TEXT NOT NULL,     -- package_added | package_removed | package_changed | status_changed | property_changed
    subject        TEXT NOT NULL,     -- package name, 'status', or the property name
    old_value      TEXT,
    new_value      TEXT
);
CREATE INDEX changes_by_host ON changes(host_seq, id);
CREATE INDEX changes_by_collection ON changes(collection_id);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    api_key_id  TEXT,                 -- NULL for the command line
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT
);

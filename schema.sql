-- opsqueue's one schema, as append-only migrations.
--
-- Each migration starts with a line `-- migration N: title`. The store applies,
-- in order and each in its own transaction, every migration above the
-- database's `PRAGMA user_version`, then sets user_version to N. A database
-- whose user_version is above the last migration here was written by newer
-- code and is refused. Never edit a migration that has shipped: append one.
--
-- Times are RFC 3339 UTC text with microseconds and a `Z`
-- (`2026-11-23T18:44:02.123456Z`), fixed width, so text order is time order.

-- migration 1: operations, logs, workers, api keys, schedules, counters

CREATE TABLE operations (
    id                  TEXT PRIMARY KEY NOT NULL,          -- UUIDv7, time-ordered
    type                TEXT NOT NULL,                      -- family.verb
    payload             TEXT NOT NULL,                      -- JSON, normalized by the action parser
    source              TEXT NOT NULL DEFAULT 'api',
    target              TEXT NOT NULL DEFAULT 'local',
    resource            TEXT,                               -- serialization key; NULL = none
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority            INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    run_at              TEXT NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_secs        INTEGER NOT NULL CHECK (timeout_secs >= 1),
    rerun_safe          INTEGER NOT NULL DEFAULT 1 CHECK (rerun_safe IN (0, 1)),
    lease_expires_at    TEXT,
    worker_id           TEXT,
    idempotency_key     TEXT,
    request_hash        TEXT,                               -- sha256 of the normalized request
    result              TEXT,                               -- JSON
    error               TEXT,                               -- JSON {code, message, retryable}
    progress            TEXT,                               -- JSON {percent, step}
    parent_id           TEXT REFERENCES operations (id) ON DELETE SET NULL,
    cancel_requested_at TEXT,
    log_bytes           INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    updated_at          TEXT NOT NULL,
    CHECK ((status = 'running') = (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

-- The claim: pending rows in claim order.
CREATE INDEX operations_claim ON operations (priority, run_at, id) WHERE status = 'pending';
-- Per-resource serialization: is something on this resource running, or pending ahead?
CREATE INDEX operations_resource_running ON operations (resource) WHERE status = 'running';
CREATE INDEX operations_resource_pending ON operations (resource, id) WHERE status = 'pending';
-- Leases, heartbeats, dead workers and cancel requests.
CREATE INDEX operations_running_worker ON operations (worker_id) WHERE status = 'running';
CREATE INDEX operations_running_lease ON operations (lease_expires_at) WHERE status = 'running';
-- Idempotency is per source.
CREATE UNIQUE INDEX operations_idempotency ON operations (source, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- List filters (newest first by id) and the pruner.
CREATE INDEX operations_status ON operations (status, id);
CREATE INDEX operations_type ON operations (type, id);
CREATE INDEX operations_source ON operations (source, id);
CREATE INDEX operations_target ON operations (target, id);
CREATE INDEX operations_resource ON operations (resource, id) WHERE resource IS NOT NULL;
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_parent ON operations (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX operations_finished ON operations (finished_at) WHERE finished_at IS NOT NULL;

-- Append-only output of an operation; the sum of line sizes is capped per
-- operation (operations.log_bytes).
CREATE TABLE operation_logs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    at           TEXT NOT NULL,
    stream       TEXT NOT NULL CHECK (stream IN ('step', 'stdout', 'stderr')),
    line         TEXT NOT NULL
);
CREATE INDEX operation_logs_operation ON operation_logs (operation_id, seq);

CREATE TABLE workers (
    id             TEXT PRIMARY KEY NOT NULL,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    process_start  INTEGER NOT NULL,        -- /proc/<pid>/stat starttime, in clock ticks since boot
    boot_id        TEXT NOT NULL,
    version        TEXT NOT NULL,
    drivers        TEXT NOT NULL,           -- JSON array of families
    targets        TEXT NOT NULL,           -- JSON array
    sources        TEXT,                    -- JSON array; NULL = all
    concurrency    INTEGER NOT NULL,
    started_at     TEXT NOT NULL,
    heartbeat_at   TEXT NOT NULL,
    stopped_at     TEXT                     -- set on clean exit or when found dead
);
CREATE INDEX workers_alive ON workers (heartbeat_at) WHERE stopped_at IS NULL;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,      -- sha256 hex of the token
    scopes       TEXT NOT NULL,             -- space-separated: read write admin
    source       TEXT,                      -- operations made with this key carry this source
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

CREATE TABLE schedules (
    name          TEXT PRIMARY KEY NOT NULL,
    cron          TEXT NOT NULL,            -- 5 or 6 fields, UTC
    type          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    target        TEXT NOT NULL DEFAULT 'local',
    priority      INTEGER NOT NULL DEFAULT 5,
    timeout_secs  INTEGER,
    max_attempts  INTEGER,
    enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    last_fire_at  TEXT,                     -- the fire time last enqueued
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- Monotonic counters shared by the three processes for /metrics; written in
-- the same transaction as what they count.
CREATE TABLE counters (
    name   TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '',        -- Prometheus label text, e.g. family="diag"
    value  REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (name, labels)
) WITHOUT ROWID;

-- migration 2: observed host state, objects opsqueue manages, Proxmox nodes, secrets

-- Payload fields an action declares secret (passwords, token secrets) are
-- held here and shown as "***" in `payload`; no API answer includes this
-- column. The worker puts them back before it parses the action.
ALTER TABLE operations ADD COLUMN secrets TEXT;  -- JSON object

-- The last state a worker observed of a host object (a pm2 process, a unit,
-- a Caddy site, a Proxmox guest), so the API answers reads at once without
-- touching the host. Written only by workers, in the same transaction as
-- the finish of the operation that observed it; data is already redacted.
CREATE TABLE observations (
    target       TEXT NOT NULL,
    family       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    data         TEXT NOT NULL,             -- JSON
    observed_at  TEXT NOT NULL,
    operation_id TEXT,
    PRIMARY KEY (target, family, kind, name)
) WITHOUT ROWID;

-- Objects opsqueue itself created on a host (a systemd unit it installed, a
-- Caddy site it added), with the desired state it applied: what may be
-- touched later, and what to re-apply after a restart.
CREATE TABLE managed_objects (
    target       TEXT NOT NULL,
    family       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    spec         TEXT NOT NULL,             -- JSON
    operation_id TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (target, family, kind, name)
) WITHOUT ROWID;

-- Proxmox VE nodes the worker talks to. The token secret is read by the
-- worker only and never returned by the API.
CREATE TABLE proxmox_nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    host         TEXT NOT NULL,
    port         INTEGER NOT NULL DEFAULT 8006 CHECK (port BETWEEN 1 AND 65535),
    token_id     TEXT NOT NULL,
    token_secret TEXT NOT NULL,
    verify_tls   INTEGER NOT NULL DEFAULT 1 CHECK (verify_tls IN (0, 1)),
    ca_cert      TEXT,                      -- PEM; trusted instead of the system roots
    timeout_secs INTEGER NOT NULL DEFAULT 30 CHECK (timeout_secs >= 1),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- migration 3: fewer indexes on the worker's hot path
-- Every claim and every finish updated these three as well. At most a few
-- hundred rows are running at once, so the reaper, heartbeats and cancel
-- requests find them through operations_status ('running', id) instead; the
-- pruner walks operations_created (an operation finished before a time was
-- created before it).
DROP INDEX operations_running_worker;
DROP INDEX operations_running_lease;
DROP INDEX operations_finished;

-- migration 4: workflows: steps with dependencies and compensations
-- A workflow is an operation of type `workflow.run` (the parent) whose
-- steps are operations with its id in `parent_id` and their name in `step`.
-- The store runs the parent, never a worker: it is `running` with no worker
-- and no lease while its steps run, so the table is rebuilt with that
-- exception in its CHECK (the store applies migrations with foreign keys
-- off and checks them before it commits). Steps and compensations are
-- deleted with their workflow.
CREATE TABLE operations_rebuilt (
    id                  TEXT PRIMARY KEY NOT NULL,
    type                TEXT NOT NULL,
    payload             TEXT NOT NULL,
    source              TEXT NOT NULL DEFAULT 'api',
    target              TEXT NOT NULL DEFAULT 'local',
    resource            TEXT,
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority            INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    run_at              TEXT NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_secs        INTEGER NOT NULL CHECK (timeout_secs >= 1),
    rerun_safe          INTEGER NOT NULL DEFAULT 1 CHECK (rerun_safe IN (0, 1)),
    lease_expires_at    TEXT,
    worker_id           TEXT,
    idempotency_key     TEXT,
    request_hash        TEXT,
    result              TEXT,
    error               TEXT,
    progress            TEXT,
    parent_id           TEXT REFERENCES operations (id) ON DELETE CASCADE,
    cancel_requested_at TEXT,
    log_bytes           INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    updated_at          TEXT NOT NULL,
    secrets             TEXT,
    step                TEXT,                               -- the step's name in its workflow
    compensates         TEXT,                               -- a compensation: the step it undoes
    deps_left           INTEGER NOT NULL DEFAULT 0          -- dependencies not completed yet;
                        CHECK (deps_left >= 0),             -- claimable only at 0 (a parent: 1)
    CHECK ((status = 'running' AND type <> 'workflow.run')
           = (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
INSERT INTO operations_rebuilt (id, type, payload, source, target, resource, status, priority,
    run_at, attempt, max_attempts, timeout_secs, rerun_safe, lease_expires_at, worker_id,
    idempotency_key, request_hash, result, error, progress, parent_id, cancel_requested_at,
    log_bytes, created_at, started_at, finished_at, updated_at, secrets)
SELECT id, type, payload, source, target, resource, status, priority,
    run_at, attempt, max_attempts, timeout_secs, rerun_safe, lease_expires_at, worker_id,
    idempotency_key, request_hash, result, error, progress, parent_id, cancel_requested_at,
    log_bytes, created_at, started_at, finished_at, updated_at, secrets
FROM operations;
DROP TABLE operations;
ALTER TABLE operations_rebuilt RENAME TO operations;

-- The indexes of migrations 1 and 3, and the claim's with `deps_left`.
CREATE INDEX operations_claim ON operations (priority, run_at, id)
    WHERE status = 'pending' AND deps_left = 0;
CREATE INDEX operations_resource_running ON operations (resource) WHERE status = 'running';
CREATE INDEX operations_resource_pending ON operations (resource, id) WHERE status = 'pending';
CREATE UNIQUE INDEX operations_idempotency ON operations (source, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX operations_status ON operations (status, id);
CREATE INDEX operations_type ON operations (type, id);
CREATE INDEX operations_source ON operations (source, id);
CREATE INDEX operations_target ON operations (target, id);
CREATE INDEX operations_resource ON operations (resource, id) WHERE resource IS NOT NULL;
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_parent ON operations (parent_id, id) WHERE parent_id IS NOT NULL;

-- Step → the steps it waits for. A completion releases its dependents
-- (`deps_left - 1`) in the transaction that records it.
CREATE TABLE operation_dependencies (
    operation_id TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    depends_on   TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    PRIMARY KEY (operation_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX operation_dependencies_depends_on ON operation_dependencies (depends_on);

-- One row per workflow (its parent operation): how it reacts to a failure
-- and where it is. `running`: steps run; `compensating`: a step failed for
-- good (or a caller cancelled) and, once nothing runs, the compensations of
-- the completed steps run one by one in reverse order of completion;
-- `stopping`: the same without compensations; `ended`: the parent is
-- terminal. `outcome` and `cause` are what the parent ends as and why.
CREATE TABLE workflows (
    id          TEXT PRIMARY KEY NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    name        TEXT,
    on_failure  TEXT NOT NULL CHECK (on_failure IN ('compensate', 'stop')),
    phase       TEXT NOT NULL DEFAULT 'running'
                CHECK (phase IN ('running', 'compensating', 'stopping', 'ended')),
    outcome     TEXT CHECK (outcome IN ('failed', 'cancelled')),
    cause       TEXT                        -- JSON {code, message, retryable}
);
CREATE INDEX workflows_active ON workflows (phase) WHERE phase <> 'ended';

-- A step's compensation, kept until it is needed: the operation it becomes
-- is made only when the step must be undone.
CREATE TABLE workflow_compensations (
    step_id      TEXT PRIMARY KEY NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,             -- JSON, secret fields masked
    secrets      TEXT,                      -- JSON: the secret fields' values
    resource     TEXT,
    rerun_safe   INTEGER NOT NULL CHECK (rerun_safe IN (0, 1)),
    timeout_secs INTEGER NOT NULL CHECK (timeout_secs >= 1),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1)
) WITHOUT ROWID;

-- migration 5: the fleet: agent keys, remote workers, host facts, targets

-- An agent key (scope `agent`) runs the work of these targets and nothing
-- else: a JSON array of target names; NULL for every other key.
ALTER TABLE api_keys ADD COLUMN targets TEXT;

-- The agent key a remote worker registered with through the API; NULL for
-- a worker beside the database. The reaper checks the process of local
-- workers on its own host only; remote workers are judged by their lease.
ALTER TABLE workers ADD COLUMN agent_key_id TEXT;
-- The worker's lease: a target is online while a worker serving it
-- heartbeated within its lease.
ALTER TABLE workers ADD COLUMN lease_secs INTEGER NOT NULL DEFAULT 30;
-- Host facts from the worker's last heartbeat (JSON: os, kernel, cpus,
-- load, memory, disks, uptime).
ALTER TABLE workers ADD COLUMN facts TEXT;

-- The servers operations run on. A row appears when a worker first serves
-- the target or someone describes it (PUT /api/v1/targets/{name}).
-- `status` changes only on a transition (online when a worker serving it
-- registers or heartbeats; offline when the last one stops or its lease
-- lapses), with `status_changed_at`: the column the event stream watches.
CREATE TABLE targets (
    name              TEXT PRIMARY KEY NOT NULL,
    description       TEXT,
    labels            TEXT NOT NULL DEFAULT '{}',  -- JSON object of strings
    role              TEXT,
    status            TEXT NOT NULL DEFAULT 'unknown'
                      CHECK (status IN ('unknown', 'online', 'offline')),
    status_changed_at TEXT,
    last_seen_at      TEXT,                        -- the last heartbeat of a worker serving it
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX targets_online ON targets (status) WHERE status = 'online';

-- migration 6: the event stream and dashboard sessions

-- What happened, in commit order, for `GET /api/v1/events` (Server-Sent
-- Events, resumable with Last-Event-ID) and the dashboard. Rows are written
-- by the triggers below, in the same transaction as the change they
-- describe, whichever process made it (the API's enqueues, cancels and
-- retries, a worker's claims, progress, logs and finishes, the monitor's
-- reaps and schedule fires): a reader that saw event N saw every change
-- committed before it. Ids come from one writer at a time, so they rise in
-- commit order with no gaps, and the pruner never deletes the newest row, so
-- no id is handed out twice and a Last-Event-ID always names one place in
-- the stream. `data` is a small JSON object made here from a few columns:
-- never a payload, a result, a log line or a secret. The monitor's pruner
-- deletes rows older than `api.events_retention_secs`.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    at           TEXT NOT NULL,
    type         TEXT NOT NULL,             -- operation.created, operation.updated, …
    operation_id TEXT,
    target       TEXT,
    parent_id    TEXT,
    data         TEXT NOT NULL              -- JSON object
);

-- The triggers are the only writers of `events`. They run on the enqueue,
-- claim and finish hot paths, so they are few (one per kind of change; a
-- workflow's own events are a second statement of the same trigger) and
-- lean: a handful of fields, no lookup but the last log line's seq (an
-- index seek). `at` is the time the writer stamped the change with
-- (`created_at`, `updated_at`), or the commit's clock where it stamped
-- none, in the fixed-width form of every other time.
CREATE TRIGGER events_operation_created AFTER INSERT ON operations
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    VALUES (NEW.created_at, 'operation.created', NEW.id, NEW.target, NEW.parent_id,
            json_object('type', NEW.type, 'status', NEW.status, 'source', NEW.source,
                        'resource', NEW.resource));
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    SELECT NEW.created_at, 'workflow.created', NEW.id, NEW.target,
           NEW.parent_id, json_object('status', NEW.status, 'source', NEW.source)
    WHERE NEW.type = 'workflow.run';
END;

-- Claimed, requeued, retried (`operation.updated`) or ended (`operation.finished`).
CREATE TRIGGER events_operation_status AFTER UPDATE OF status ON operations
WHEN NEW.status IS NOT OLD.status
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    VALUES (NEW.updated_at,
            CASE WHEN NEW.finished_at IS NOT NULL THEN 'operation.finished'
                 ELSE 'operation.updated' END,
            NEW.id, NEW.target, NEW.parent_id,
            json_object('status', NEW.status, 'previous', OLD.status, 'attempt', NEW.attempt,
                        'error', NEW.error ->> '$.code'));
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    SELECT NEW.updated_at,
           CASE WHEN NEW.finished_at IS NOT NULL THEN 'workflow.finished' ELSE 'workflow.updated' END,
           NEW.id, NEW.target, NEW.parent_id,
           json_object('status', NEW.status, 'previous', OLD.status, 'attempt', NEW.attempt,
                       'error', NEW.error ->> '$.code')
    WHERE NEW.type = 'workflow.run';
END;

-- Progress, new log lines (`log_seq`: the last line's seq) and cancel
-- requests of an operation whose status stays the same.
CREATE TRIGGER events_operation_activity
AFTER UPDATE OF progress, log_bytes, cancel_requested_at ON operations
WHEN NEW.status IS OLD.status
     AND (NEW.progress IS NOT OLD.progress OR NEW.log_bytes IS NOT OLD.log_bytes
          OR NEW.cancel_requested_at IS NOT OLD.cancel_requested_at)
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 'operation.updated', NEW.id, NEW.target,
            NEW.parent_id,
            json_object('status', NEW.status, 'attempt', NEW.attempt,
                        'progress', json(NEW.progress), 'log_bytes', NEW.log_bytes,
                        'log_seq', CASE WHEN NEW.log_bytes IS NOT OLD.log_bytes THEN
                            (SELECT max(seq) FROM operation_logs WHERE operation_id = NEW.id) END,
                        'cancel_requested', json(CASE WHEN NEW.cancel_requested_at IS NULL
                                                      THEN 'false' ELSE 'true' END)));
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    SELECT strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 'workflow.updated', NEW.id, NEW.target,
           NEW.parent_id, json_object('status', NEW.status, 'progress', json(NEW.progress))
    WHERE NEW.type = 'workflow.run' AND NEW.progress IS NOT OLD.progress;
END;

-- A schedule fired: its last fire time moved (the operation it enqueued
-- has its own operation.created in the same transaction).
CREATE TRIGGER events_schedule_fired AFTER UPDATE OF last_fire_at ON schedules
WHEN NEW.last_fire_at IS NOT OLD.last_fire_at
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 'schedule.fired', NULL, NEW.target, NULL,
            json_object('schedule', NEW.name, 'type', NEW.type, 'fire_at', NEW.last_fire_at));
END;

-- A target went online or offline (a worker serving it registered, beat
-- after a silence or stopped, or the reaper found none serving it), or
-- appeared already online.
CREATE TRIGGER events_target_status AFTER UPDATE OF status ON targets
WHEN NEW.status IS NOT OLD.status
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    VALUES (coalesce(NEW.status_changed_at, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
            'target.status_changed', NULL, NEW.name, NULL,
            json_object('status', NEW.status, 'previous', OLD.status));
END;
CREATE TRIGGER events_target_created AFTER INSERT ON targets
WHEN NEW.status <> 'unknown'
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    VALUES (coalesce(NEW.status_changed_at, NEW.created_at), 'target.status_changed', NULL,
            NEW.name, NULL, json_object('status', NEW.status, 'previous', 'unknown'));
END;

-- Dashboard sign-ins. The cookie holds a random session id; only its sha256
-- is stored. A session acts with the key it was signed in with, so a
-- revoked key ends its sessions at once; it lasts until `expires_at`
-- (`api.session_secs` after sign-in) or sign-out. `csrf_token` must come
-- with every request that changes something.
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY NOT NULL,
    key_id     TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) WITHOUT ROWID;

-- migration 7: process migration: artifacts, migrations, the system log

-- Files that move between hosts through the API host (a migration's state
-- archive). The bytes are a file `<id>` in `[artifacts] dir`; `received`
-- says how many of them are written and synced, so an upload resumes there.
-- An artifact belongs to the workflow of the step that created it: only a
-- worker holding a running step of that workflow may read or write it.
CREATE TABLE artifacts (
    id          TEXT PRIMARY KEY NOT NULL,                 -- UUIDv7
    workflow_id TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),        -- as declared at creation
    sha256      TEXT NOT NULL,                             -- of the whole, as declared
    received    INTEGER NOT NULL DEFAULT 0 CHECK (received BETWEEN 0 AND size),
    complete    INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (workflow_id, name)
);

-- A migration: its own id (the one its steps name), the workflow that runs
-- it and what it moves where. At most one migration of a process is active
-- at a time (the API checks it in the transaction that inserts one).
CREATE TABLE migrations (
    id          TEXT PRIMARY KEY NOT NULL,
    workflow_id TEXT NOT NULL UNIQUE REFERENCES operations (id) ON DELETE CASCADE,
    process_id  TEXT NOT NULL,                             -- <kind>:<name>@<server>
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    target      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX migrations_process ON migrations (process_id);

-- The system log (the process migration system's `GET /api/logs`):
-- migrations started and ended, targets online and offline. Pruned with
-- the history.
CREATE TABLE system_logs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    level     TEXT NOT NULL CHECK (level IN ('INFO', 'WARN', 'ERROR')),
    component TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX system_logs_at ON system_logs (at);

CREATE TRIGGER system_log_migration_ended AFTER UPDATE OF status ON operations
WHEN NEW.type = 'workflow.run'
     AND NEW.status IN ('completed', 'failed', 'cancelled')
     AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    INSERT INTO system_logs (at, level, component, message)
    SELECT strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'),
           CASE NEW.status WHEN 'completed' THEN 'INFO' ELSE 'ERROR' END,
           'coordinator',
           CASE
               WHEN NEW.status = 'completed' THEN
                   'Migration ' || m.id || ' completed: ' || m.process_id || ' now runs on ' || m.target
               WHEN json_extract(NEW.result, '$.compensated') = 1 THEN
                   'Migration ' || m.id || ' of ' || m.process_id || ' ' || NEW.status
                   || ' and was rolled back: ' || coalesce(json_extract(NEW.error, '$.message'), '')
               ELSE
                   'Migration ' || m.id || ' of ' || m.process_id || ' ' || NEW.status
                   || ': ' || coalesce(json_extract(NEW.error, '$.message'), '')
           END
    FROM migrations m WHERE m.workflow_id = NEW.id;
END;

CREATE TRIGGER system_log_target_status AFTER UPDATE OF status ON targets
WHEN NEW.status IS NOT OLD.status AND NEW.status IN ('online', 'offline')
BEGIN
    INSERT INTO system_logs (at, level, component, message)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'),
            CASE NEW.status WHEN 'online' THEN 'INFO' ELSE 'WARN' END,
            'fleet', 'Server ' || NEW.name || ' is ' || NEW.status);
END;
CREATE TRIGGER system_log_target_created AFTER INSERT ON targets
WHEN NEW.status = 'online'
BEGIN
    INSERT INTO system_logs (at, level, component, message)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 'INFO', 'fleet',
            'Server ' || NEW.name || ' is online');
END;

-- migration 8: migration events

-- `migration.created` when a migration is stored, `migration.updated` when
-- its workflow or one of its steps changes status (the step's name and
-- status in `data`), `migration.finished` when its workflow ends. The
-- event's `operation_id` is the migration's workflow, its `target` the
-- server the process moves to. Only workflows and their steps pay for the
-- lookup (one seek on `migrations.workflow_id`).
CREATE TRIGGER events_migration_created AFTER INSERT ON migrations
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    VALUES (NEW.created_at, 'migration.created', NEW.workflow_id, NEW.target, NULL,
            json_object('migration', NEW.id, 'process_id', NEW.process_id,
                        'source', NEW.source, 'target', NEW.target));
END;

CREATE TRIGGER events_migration_status AFTER UPDATE OF status ON operations
WHEN NEW.status IS NOT OLD.status
     AND (NEW.type = 'workflow.run' OR NEW.parent_id IS NOT NULL)
BEGIN
    INSERT INTO events (at, type, operation_id, target, parent_id, data)
    SELECT NEW.updated_at,
           CASE WHEN NEW.type = 'workflow.run' AND NEW.finished_at IS NOT NULL
                THEN 'migration.finished' ELSE 'migration.updated' END,
           m.workflow_id, m.target, NULL,
           CASE WHEN NEW.type = 'workflow.run'
                THEN json_object('migration', m.id, 'process_id', m.process_id,
                                 'status', NEW.status, 'previous', OLD.status,
                                 'error', NEW.error ->> '$.code')
                ELSE json_object('migration', m.id, 'process_id', m.process_id,
                                 'step', NEW.step, 'step_status', NEW.status)
           END
    FROM migrations m
    WHERE m.workflow_id = CASE WHEN NEW.type = 'workflow.run' THEN NEW.id ELSE NEW.parent_id END;
END;

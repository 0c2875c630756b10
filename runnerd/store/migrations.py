"""Ordered schema migrations, keyed on PRAGMA user_version. Append, never edit a shipped one."""

from __future__ import annotations

# A migration whose text starts with this runs statement by statement, not in one transaction.
OUTSIDE_TRANSACTION = "-- outside a transaction\n"
# The terminal statuses, spelled out: a shipped migration must not change when domain.py does.
_TERMINAL = "7, 31, 32, 70, 71, 72, 73, 74, 75, 76"

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE jobs (
            job_id        TEXT PRIMARY KEY,
            owner         TEXT NOT NULL,            -- consumerAddress exactly as sent
            owner_lc      TEXT NOT NULL,            -- lower-cased, for ownership checks
            document_id   TEXT NOT NULL,
            environment   TEXT NOT NULL,
            agreement_id  TEXT NOT NULL,
            algo_did      TEXT NOT NULL,
            input_dids    TEXT NOT NULL,            -- JSON list
            spec          TEXT NOT NULL,            -- JSON: the validated plan the runner executes
            status        INTEGER NOT NULL,
            date_created  REAL NOT NULL,
            date_started  REAL,
            date_finished REAL,
            stopreq       INTEGER NOT NULL DEFAULT 0,
            removed       INTEGER NOT NULL DEFAULT 0,
            results       TEXT NOT NULL DEFAULT '[]',
            termination   TEXT,                     -- JSON terminationDetails
            ending        INTEGER,                  -- the final status, decided before publishing
            error         TEXT,
            slot          TEXT,                     -- JSON: cpus/gpus held while running
            expires_at    REAL
        );
        CREATE INDEX jobs_by_owner ON jobs(owner_lc, date_created);
        CREATE INDEX jobs_by_status ON jobs(status, environment);
        CREATE INDEX jobs_by_agreement ON jobs(agreement_id);
        CREATE INDEX jobs_by_expiry ON jobs(expires_at) WHERE removed = 0;

        CREATE TABLE steps (
            job_id         TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
            kind           TEXT NOT NULL,           -- provision | algorithm | filter
            state          TEXT NOT NULL,           -- creating | created | running | exited | abandoned
            container_name TEXT NOT NULL,
            container_id   TEXT,
            started_at     REAL,
            finished_at    REAL,
            exit_code      INTEGER,
            oom_killed     INTEGER,
            error          TEXT,
            PRIMARY KEY (job_id, kind)
        );

        CREATE TABLE nonces (
            address TEXT PRIMARY KEY,               -- lower-cased
            nonce   TEXT NOT NULL                   -- exact decimal text last accepted
        );
        """,
    ),
    (
        "0002_status_history",
        """
        -- [[status, epoch seconds], ...]: when each status was reached (for `submit --wait`)
        ALTER TABLE jobs ADD COLUMN history TEXT NOT NULL DEFAULT '[]';
        """,
    ),
    (
        "0003_owner_usage",
        """
        -- Disk the job's kept results occupy on the host (allocated blocks), set when it ends.
        ALTER TABLE jobs ADD COLUMN result_bytes INTEGER NOT NULL DEFAULT 0;
        -- Rows written before this migration: the sizes in their results list are the best guess.
        UPDATE jobs SET result_bytes = COALESCE((SELECT SUM(json_extract(value, '$.filesize'))
                                                 FROM json_each(jobs.results)), 0) WHERE removed = 0;
        -- A finished job's plan (raw code, custom data, secret) is not needed any more.
        UPDATE jobs SET spec = '{}' WHERE status IN (TERMINAL);
        CREATE INDEX jobs_by_removal ON jobs(expires_at) WHERE removed = 1;

        -- Per-owner usage, kept exact by the triggers below in the same transaction as every
        -- change to a job: an admission reads one row instead of counting the owner's jobs.
        CREATE TABLE owners (
            owner_lc   TEXT PRIMARY KEY,
            active     INTEGER NOT NULL DEFAULT 0,  -- jobs queued or running (not terminal)
            kept_bytes INTEGER NOT NULL DEFAULT 0   -- result_bytes of its jobs not yet removed
        ) WITHOUT ROWID;
        INSERT INTO owners (owner_lc, active, kept_bytes)
            SELECT owner_lc, SUM(status NOT IN (TERMINAL)), SUM(CASE WHEN removed = 0 THEN result_bytes ELSE 0 END)
            FROM jobs GROUP BY owner_lc;
        CREATE TRIGGER owners_on_insert AFTER INSERT ON jobs BEGIN
            INSERT OR IGNORE INTO owners (owner_lc) VALUES (NEW.owner_lc);
            UPDATE owners SET active = active + (NEW.status NOT IN (TERMINAL)),
                              kept_bytes = kept_bytes + (CASE WHEN NEW.removed = 0 THEN NEW.result_bytes ELSE 0 END)
            WHERE owner_lc = NEW.owner_lc;
        END;
        CREATE TRIGGER owners_on_update AFTER UPDATE OF status, removed, result_bytes ON jobs BEGIN
            UPDATE owners SET active = active + (NEW.status NOT IN (TERMINAL)) - (OLD.status NOT IN (TERMINAL)),
                              kept_bytes = kept_bytes + (CASE WHEN NEW.removed = 0 THEN NEW.result_bytes ELSE 0 END)
                                                      - (CASE WHEN OLD.removed = 0 THEN OLD.result_bytes ELSE 0 END)
            WHERE owner_lc = NEW.owner_lc;
        END;
        CREATE TRIGGER owners_on_delete AFTER DELETE ON jobs BEGIN
            UPDATE owners SET active = active - (OLD.status NOT IN (TERMINAL)),
                              kept_bytes = kept_bytes - (CASE WHEN OLD.removed = 0 THEN OLD.result_bytes ELSE 0 END)
            WHERE owner_lc = OLD.owner_lc;
            -- addresses are free to make: an owner with nothing left keeps no row
            DELETE FROM owners WHERE owner_lc = OLD.owner_lc AND active = 0 AND kept_bytes = 0;
        END;
        """.replace("TERMINAL", _TERMINAL),
    ),
    (
        "0004_incremental_vacuum",
        # Rows pruned by the sweeper free pages; with incremental auto_vacuum the file can hand
        # them back (PRAGMA incremental_vacuum). Changing auto_vacuum on an existing file takes
        # effect only through a VACUUM, which cannot run inside a transaction.
        OUTSIDE_TRANSACTION + """
        PRAGMA auto_vacuum = INCREMENTAL;
        VACUUM;
        """,
    ),
    (
        "0005_restart",
        """
        -- the job this one re-runs (POST compute with the jobId of a stopped or failed job)
        ALTER TABLE jobs ADD COLUMN restarted_from TEXT;
        -- JSON: the start request's inputs, algorithm and environment, what a restart re-runs
        -- intake from (kept when the spec is dropped; small: no files, no DDOs)
        ALTER TABLE jobs ADD COLUMN request TEXT;
        """,
    ),
    (
        "0006_result_suffixes",
        """
        -- Ocean's computeResult text, consumerAddress + jobId + index + nonce, is also the text of a
        -- status read, stop, delete or log read of that job with nonce index+nonce (the digits run
        -- together), a nonce not yet used. What follows the jobId in each used result signature is
        -- kept here, with its job, so that it is never accepted again in any other reading.
        CREATE TABLE result_suffixes (
            job_id TEXT NOT NULL,
            suffix TEXT NOT NULL,
            PRIMARY KEY (job_id, suffix)
        ) WITHOUT ROWID;
        CREATE TRIGGER result_suffixes_on_delete AFTER DELETE ON jobs BEGIN
            DELETE FROM result_suffixes WHERE job_id = OLD.job_id;
        END;
        """,
    ),
    (
        "0007_finished_index",
        """
        -- the web console's charts read the jobs finished in the last hour (store/console.py)
        CREATE INDEX jobs_by_finish ON jobs(date_finished) WHERE date_finished IS NOT NULL;
        """,
    ),
    (
        "0008_slot_and_images",
        """
        -- `slot` held the scheduler's cores and GPUs and, from configuring on, the images the runner
        -- resolved as well. Each now has its own column:
        --   slot    JSON {cpuset, gpus}: the cores and GPUs the job holds while it runs (scheduler)
        --   images  JSON {image, volumes, helperVolumes}: the algorithm's image reference as resolved
        --           and the VOLUMEs it and the helper image declare (runner; each gets a tmpfs)
        ALTER TABLE jobs ADD COLUMN images TEXT;
        UPDATE jobs SET images = json_object(
                'image', json_extract(slot, '$.image'),
                'volumes', json(COALESCE(json_extract(slot, '$.volumes'), '[]')),
                'helperVolumes', json(COALESCE(json_extract(slot, '$.helperVolumes'), '[]')))
            WHERE slot IS NOT NULL AND json_extract(slot, '$.image') IS NOT NULL;
        UPDATE jobs SET slot = json_object(
                'cpuset', json_extract(slot, '$.cpuset'),
                'gpus', json(COALESCE(json_extract(slot, '$.gpus'), '[]')))
            WHERE slot IS NOT NULL;
        """,
    ),
    (
        "0009_job_terms_and_auth_tokens",
        """
        -- ocean-node dialect (#11). The auth tokens issued by createAuthToken, each bound to the
        -- address that signed for it. Only a digest of the token is kept; invalidateAuthToken and
        -- expiry remove the row, and a token without its row is refused.
        CREATE TABLE auth_tokens (
            digest      TEXT PRIMARY KEY,           -- sha256 hex of the token
            address_lc  TEXT NOT NULL,
            created_at  REAL NOT NULL,
            valid_until REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX auth_tokens_by_expiry ON auth_tokens(valid_until);
        -- JSON JobTerms: what a start asked beyond its plan (max run time, queue wait, viewers,
        -- metadata, resources); NULL for none. queue_deadline: when a queued job's wait runs out.
        ALTER TABLE jobs ADD COLUMN terms TEXT;
        ALTER TABLE jobs ADD COLUMN queue_deadline REAL;
        CREATE INDEX jobs_by_queue_deadline ON jobs(queue_deadline) WHERE status = 1 AND queue_deadline IS NOT NULL;
        """,
    ),
    (
        "0010_orders_used",
        """
        -- Chain mode (#16): every on-chain order (chainId:txHash) that paid for a job, written in
        -- the job's own insert transaction, so one order can never pay for two jobs, not even two
        -- starts racing. No foreign key and no delete trigger: a deleted job's order stays spent.
        CREATE TABLE orders_used (
            order_key TEXT PRIMARY KEY,
            job_id    TEXT NOT NULL,
            used_at   REAL NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        "0011_auth_tokens_by_address",
        """
        -- Each createAuthToken keeps only the address's newest tokens (store/tokens.py): without
        -- this index that trim scanned the whole table, about 0.2 s per token at 500,000 rows
        -- (5,000 addresses of 100 tokens), all of it inside the one write transaction.
        CREATE INDEX auth_tokens_by_address ON auth_tokens(address_lc, created_at);
        """,
    ),
    (
        "0012_usage",
        """
        -- #15: a finished job's final resource use (JSON: the status object's `usage`, also in its
        -- attestation), kept once the algorithm ended
        ALTER TABLE jobs ADD COLUMN usage TEXT;
        """,
    ),
]

LATEST = len(MIGRATIONS)

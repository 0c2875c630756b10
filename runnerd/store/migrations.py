"""Ordered schema migrations, keyed on PRAGMA user_version. Append, never edit a shipped one."""

from __future__ import annotations

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
        "0003_restart",
        """
        -- the job this one re-runs (POST compute with the jobId of a stopped or failed job)
        ALTER TABLE jobs ADD COLUMN restarted_from TEXT;
        -- JSON: the start request's inputs, algorithm and environment, what a restart re-runs
        -- intake from (kept when the spec is dropped; small: no files, no DDOs)
        ALTER TABLE jobs ADD COLUMN request TEXT;
        """,
    ),
]

LATEST = len(MIGRATIONS)

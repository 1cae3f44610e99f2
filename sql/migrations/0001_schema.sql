-- mailsync schema, version 1.
-- One chunk table (chunked_sync_jobs) that is also the work queue; every row carries
-- business_id so that tenant isolation can be enforced by the database (see 0002).

-- A mailbox folder to sync, owned by one business (tenant).
CREATE TABLE stores (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    business_id uuid        NOT NULL,
    name        text        NOT NULL,
    mailbox     text        NOT NULL,               -- UPN or Entra object id
    folder      text        NOT NULL DEFAULT 'inbox',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (business_id, mailbox, folder),
    -- composite key so children can reference (id, business_id) and never cross tenants
    UNIQUE (id, business_id)
);

-- Parent jobs: one sync of one store.
CREATE TABLE sync_queue (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    business_id      uuid        NOT NULL,
    store_id         uuid        NOT NULL,
    sync_type        text        NOT NULL
        CHECK (sync_type IN ('full', 'incremental', 'date_range')),
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'partial_failure', 'failed')),
    sync_from        timestamptz,
    sync_to          timestamptz,
    chunk_size       integer     NOT NULL CHECK (chunk_size > 0),
    page_size        integer     NOT NULL CHECK (page_size BETWEEN 1 AND 1000),
    estimated_emails integer     CHECK (estimated_emails >= 0),
    total_chunks     integer     CHECK (total_chunks >= 1),
    emails_processed integer     NOT NULL DEFAULT 0,
    emails_failed    integer     NOT NULL DEFAULT 0,
    api_calls_made   integer     NOT NULL DEFAULT 0,
    error_message    text,
    error_category   text,
    metadata         jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (sync_from IS NULL OR sync_to IS NULL OR sync_from < sync_to),
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE,
    UNIQUE (id, business_id)
);

-- One active sync per store: a second one cannot even be inserted.
CREATE UNIQUE INDEX sync_queue_one_active_per_store
    ON sync_queue (store_id) WHERE status IN ('pending', 'running');
CREATE INDEX sync_queue_finished ON sync_queue (status, completed_at);

-- The chunks, and the work queue. Chunks of a job run strictly in chunk_index order: each
-- continues from the cursor where the one before it stopped.
CREATE TABLE chunked_sync_jobs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    parent_sync_job_id uuid        NOT NULL,
    business_id        uuid        NOT NULL,
    store_id           uuid        NOT NULL,
    chunk_index        integer     NOT NULL CHECK (chunk_index >= 1),
    total_chunks       integer     NOT NULL CHECK (total_chunks >= 1),
    chunk_size         integer     NOT NULL CHECK (chunk_size > 0),
    estimated_emails   integer     NOT NULL CHECK (estimated_emails >= 0),
    status             text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'retrying', 'completed', 'failed')),
    attempts           integer     NOT NULL DEFAULT 0,
    max_attempts       integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    worker_id          text,
    heartbeat_at       timestamptz,
    next_attempt_at    timestamptz,
    started_at         timestamptz,
    completed_at       timestamptz,
    emails_processed   integer     NOT NULL DEFAULT 0,
    emails_failed      integer     NOT NULL DEFAULT 0,
    api_calls_made     integer     NOT NULL DEFAULT 0,
    processing_time_ms integer     NOT NULL DEFAULT 0,
    error_message      text,
    error_category     text,
    checkpoint_data    jsonb       NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (parent_sync_job_id, chunk_index),
    CHECK (chunk_index <= total_chunks),
    CHECK (attempts <= max_attempts),
    -- a chunk in processing always names its holder and when it last proved alive
    CHECK (status <> 'processing' OR (worker_id IS NOT NULL AND heartbeat_at IS NOT NULL)),
    FOREIGN KEY (parent_sync_job_id, business_id)
        REFERENCES sync_queue (id, business_id) ON DELETE CASCADE
);
CREATE INDEX chunked_sync_jobs_processing
    ON chunked_sync_jobs (heartbeat_at) WHERE status = 'processing';
CREATE INDEX chunked_sync_jobs_created ON chunked_sync_jobs (created_at);
CREATE INDEX chunked_sync_jobs_store ON chunked_sync_jobs (store_id, created_at);

-- The resumable state of a job, appended at every committed page: the newest row is the
-- exact position where the sync continues, whichever chunk or attempt comes next.
CREATE TABLE sync_state_checkpoints (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id      uuid        NOT NULL,
    store_id         uuid        NOT NULL,
    sync_job_id      uuid        NOT NULL,
    chunk_id         uuid        NOT NULL REFERENCES chunked_sync_jobs (id) ON DELETE CASCADE,
    chunk_index      integer     NOT NULL,
    cursor           jsonb       NOT NULL,
    emails_processed integer     NOT NULL,  -- in the whole job so far
    exhausted        boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (sync_job_id, business_id) REFERENCES sync_queue (id, business_id) ON DELETE CASCADE
);
CREATE INDEX sync_state_checkpoints_job ON sync_state_checkpoints (sync_job_id, id DESC);

-- One row per Graph message per store.
CREATE TABLE emails (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id         uuid        NOT NULL,
    store_id            uuid        NOT NULL,
    graph_id            text        NOT NULL,
    internet_message_id text,
    conversation_id     text,
    subject             text,
    sender_name         text,
    sender_address      text,
    from_address        text,
    to_recipients       jsonb       NOT NULL DEFAULT '[]',
    cc_recipients       jsonb       NOT NULL DEFAULT '[]',
    received_at         timestamptz NOT NULL,
    sent_at             timestamptz,
    body_content_type   text,
    body                text,
    body_preview        text,
    has_attachments     boolean     NOT NULL DEFAULT false,
    is_read             boolean,
    importance          text,
    parent_folder_id    text,
    content_hash        text        NOT NULL,  -- of the stored fields: "changed?" in one compare
    sync_job_id         uuid,
    first_synced_at     timestamptz NOT NULL DEFAULT now(),
    last_synced_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (store_id, graph_id),
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE
);
CREATE INDEX emails_store_received ON emails (store_id, received_at);
CREATE INDEX emails_internet_message_id ON emails (store_id, internet_message_id);

-- Attachment metadata. Keyed by the message's (store_id, graph_id), not by a foreign key:
-- an email removed by an incremental sync or an operator leaves its attachment rows for
-- retention to reap after a grace period (attachment content may live elsewhere later).
CREATE TABLE email_attachments (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id          uuid        NOT NULL,
    store_id             uuid        NOT NULL,
    email_graph_id       text        NOT NULL,
    graph_attachment_id  text        NOT NULL,
    name                 text,
    content_type         text,
    size_bytes           integer,
    is_inline            boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (store_id, email_graph_id, graph_attachment_id),
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE
);
CREATE INDEX email_attachments_created ON email_attachments (created_at);

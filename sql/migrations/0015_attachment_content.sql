-- Attachment content, stored once per distinct content and business (issue 22).
--
-- Delta pages no longer carry attachments ($expand put every attachment's base64 into the
-- page: microsoft-graph-docs-contrib#8431). A message that may have attachments is marked
-- for listing (attachment_listings) when its page commits; the sync's fetch-attachments
-- step lists it, then fetches each file or item attachment's bytes through $value into
-- attachment_blobs, keyed by (business_id, sha256): a signature logo on 10,000 messages is
-- one blob. Never shared across businesses (row-level security, as on every table).

CREATE TABLE attachment_blobs (
    business_id         uuid        NOT NULL,
    sha256              text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes          bigint      NOT NULL CHECK (size_bytes >= 0),
    content             bytea       NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every insert that finds the blob already there: retention deletes only a
    -- blob unreferenced *and* untouched for its grace period (sql/cleanup.sql).
    last_referenced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_id, sha256)
);
-- PDFs, images and Office files are compressed already: out of line, uncompressed, saves
-- pglz's CPU for nothing gained.
ALTER TABLE attachment_blobs ALTER COLUMN content SET STORAGE EXTERNAL;

-- A message whose attachments are yet to be listed (listed_at NULL), or were.
CREATE TABLE attachment_listings (
    business_id     uuid        NOT NULL,
    store_id        uuid        NOT NULL,
    email_graph_id  text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    listed_at       timestamptz,
    list_error      text,       -- permanent: the message is gone, its id malformed
    job_id          uuid,       -- the last job that tried
    run_id          uuid,       -- the last fetch-attachments run that tried (one pass each)
    PRIMARY KEY (store_id, email_graph_id),
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE
);
CREATE INDEX attachment_listings_pending ON attachment_listings (store_id)
    WHERE listed_at IS NULL;

-- size_bytes was Graph's `size`, which is not the byte count (docs-contrib#4601): it moves
-- to graph_size, and size_bytes becomes the real length once the content is fetched.
ALTER TABLE email_attachments
    ADD COLUMN kind text NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'item', 'reference')),
    ADD COLUMN graph_size bigint,
    ADD COLUMN content_id text,
    ADD COLUMN sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN fetch_error text,        -- permanent: never asked for again
    ADD COLUMN transient_error text,    -- the last transient failure; still pending
    ADD COLUMN fetched_at timestamptz,
    ADD COLUMN fetch_job_id uuid,       -- the job that last tried: per-job counts
    ADD COLUMN fetch_run_id uuid,       -- the fetch-attachments run that last tried
    ADD COLUMN deduplicated boolean NOT NULL DEFAULT false,
    ALTER COLUMN size_bytes TYPE bigint;
UPDATE email_attachments SET graph_size = size_bytes, size_bytes = NULL;
-- The blob an attachment points at exists for as long as the attachment does: the
-- retention's delete and a fetch's insert serialise on the blob row (see cleanup.sql).
ALTER TABLE email_attachments
    ADD FOREIGN KEY (business_id, sha256) REFERENCES attachment_blobs (business_id, sha256);
CREATE INDEX email_attachments_pending ON email_attachments (store_id)
    WHERE fetched_at IS NULL AND fetch_error IS NULL AND kind <> 'reference';
CREATE INDEX email_attachments_sha256 ON email_attachments (business_id, sha256)
    WHERE sha256 IS NOT NULL;
CREATE INDEX email_attachments_fetch_job ON email_attachments (fetch_job_id)
    WHERE fetch_job_id IS NOT NULL;

-- One row per stored attachment, its content beside it (NULL for a reference attachment
-- and for one not fetched yet or never fetchable).
CREATE VIEW attachment_contents AS
SELECT a.store_id, a.email_graph_id, a.graph_attachment_id, a.kind, a.name, a.content_type,
       a.is_inline, a.size_bytes, a.sha256, b.content
  FROM email_attachments AS a
  LEFT JOIN attachment_blobs AS b ON b.business_id = a.business_id AND b.sha256 = a.sha256;
ALTER VIEW attachment_contents SET (security_invoker = true);

ALTER TABLE attachment_blobs OWNER TO mailsync_owner;
ALTER TABLE attachment_listings OWNER TO mailsync_owner;
ALTER VIEW attachment_contents OWNER TO mailsync_owner;
REVOKE ALL ON attachment_blobs, attachment_listings, attachment_contents FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON attachment_blobs, attachment_listings TO mailsync_worker;
GRANT SELECT ON attachment_contents TO mailsync_worker, mailsync_reporting, mailsync_maintenance;
GRANT SELECT ON attachment_blobs, attachment_listings TO mailsync_reporting;
GRANT SELECT, UPDATE, DELETE ON attachment_blobs, attachment_listings TO mailsync_maintenance;

ALTER TABLE attachment_blobs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attachment_blobs
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE attachment_listings ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attachment_listings
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

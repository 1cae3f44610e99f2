-- Change notifications, one run for every changed mailbox (issue 24, sync-changed).
--
-- flows/sync_changed.py asks, about every second while it runs, which mailboxes of a
-- business have a notification newer than their newest job (changed_mailboxes in
-- sql/notifications.sql). A store's newest job was found by reading all its jobs: a tenant
-- polled hourly for a month keeps hundreds of jobs per mailbox, thousands of mailboxes.
-- This index answers "the newest job of this store" (and the relay's "a job of this store
-- since", store_job_since) with one index probe.
CREATE INDEX sync_queue_store_created ON sync_queue (store_id, created_at);

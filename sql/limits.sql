-- Named queries of Graph's limits, shared by every worker (mailsync/graph/limits.py); the tables
-- and acquire_graph_slot are in migrations/0007_mailbox_registry.sql and 0019.

-- name: acquire_graph_slot
-- One request slot of every limit in %(limits)s (JSON: [{key, max_in_flight, budget,
-- span_s, slice_s}]), leased for %(lease_s)s seconds; or no lease, and how long to wait.
SELECT * FROM acquire_graph_slot(%(limits)s::jsonb, %(lease_s)s);

-- name: release_graph_slot
-- The request is answered: its slots are free.
DELETE FROM graph_leases WHERE lease_id = %(lease_id)s;

-- name: pause_graph_limit
-- Graph answered 429 with Retry-After for this limit's mailbox: nobody sends it another
-- request before then (a pause is only ever lengthened).
UPDATE graph_limits
   SET paused_until = greatest(coalesce(paused_until, '-infinity'),
                               clock_timestamp() + make_interval(secs => %(seconds)s)),
       throttled = throttled + 1
 WHERE key = %(key)s;

-- name: graph_limit_usage
-- The limits' counters (mailsync bench, tests): slots granted, 429s reported, waits.
SELECT key, max_in_flight, budget, span_s, requests, throttled, waits, paused_until,
       (SELECT coalesce(sum(l.slots), 0) FROM graph_leases AS l WHERE l.key = g.key) AS in_flight,
       (SELECT coalesce(sum(w.requests), 0) FROM graph_window AS w WHERE w.key = g.key)
           AS in_window
  FROM graph_limits AS g
 ORDER BY key;

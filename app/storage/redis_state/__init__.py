"""State shared through Redis, one owner per kind (key names and their meaning: app/redis_keys.py).

- signals.py:      what tells the api replicas and the scheduler that an org changed: the
                   catalog and model version pointers, the serving and deleted org sets, the
                   new-data counter, the last train's figures for /metrics.
- train_flags.py:  the heartbeat of a running train, and the model-search and train-again
                   requests waiting for an org's next train.
- tombstones.py:   erasure tombstones (user id -> time of the request), per org.
- ingest_stats.py: records persisted and parked by the ingest worker, per kind, for /metrics.
- forget.py:       every key of an org, deleted by name when the org is (lehnz org delete).

Owned elsewhere, each by the module that gives it its meaning: real-time activity and the
alias map (app/recommend/realtime.py), the job queues, pending ingest jobs and the dead-letter
list (app/queue.py), the key-cache epoch (app/key_epoch.py), rate-limit counters
(app/api/rate_limit.py), signed-out sessions (app/api/sessions.py), keys' last use
(app/api/key_usage.py).

Only these modules import app/redis_keys.py; every other module calls their functions, which
take a client or a pipeline, so a caller's MULTI still holds all of its writes
(tests/test_redis_ownership.py checks it).
"""

"""Delivery of the outbox: claim due rows, send them through their adapter, record each outcome.

- loop.py: the loop and the claims. Woken by LISTEN on outbox.DUE_CHANNEL (every enqueue and
  replay notifies on commit), so delivery starts at once; a poll every OUTBOX_POLL_SECONDS picks up
  retries whose backoff has run out. Rows are claimed across orgs, with what sending them needs, by
  `notify.claim_outbox_rows` (one statement: FOR UPDATE SKIP LOCKED, a lease, attempts + 1), so
  several workers never send the same row; a worker
  that dies mid-send leaves its rows claimed until the lease runs out, then another worker takes
  them. Claimed rows are sent by OUTBOX_CONCURRENCY lanes; an SMTP lane keeps one connection.
- routing.py: which adapter sends a row (by kind and EMAIL_MODE / EXPORT_MODE), each adapter behind
  its circuit breaker. While an adapter's circuit is open nothing is attempted.
- outcomes.py: what each attempt means for its row, and writing it. Each row's outcome is committed
  right after its send, in the row's org, before its lane sends the next message (OutcomeWriter:
  lanes that finish together share one commit). After a SIGKILL at most the messages in flight, one
  per lane, go out again, with the same Message-ID. Transient failures retry with exponential
  backoff and equal jitter until OUTBOX_MAX_ATTEMPTS, then the row is dead; permanent refusals are
  dead at once; rows deferred by an open circuit go back to pending, their attempt given back, due
  when the breaker half-opens.
"""

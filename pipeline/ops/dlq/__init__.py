"""Dead letters after the cause is fixed: list, show, replay and purge them (`pipeline dlq ...`).

- `letters`: a dead letter as read back from the `dead_letters` collection or the Kafka dead-letter topic,
  validated (pure), and the filters that select them (a MongoDB query built only from validated values).
- `decide`: what the current configuration makes of one dead letter: a document to store under its original
  `_id`, a data error (the new reason), filtered out, or not replayable (pure).
- `store`: the `dead_letters` collection: counts, one letter, marking letters replayed or failing, purging.
- `topic`: reading a Kafka dead-letter topic (and, when needed, the original record's timestamp).
- `replay`: storing what decodes now, exactly once, then marking it (the orchestration).
"""

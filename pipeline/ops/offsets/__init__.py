"""The consumer group's committed offsets: show them, reset them (`pipeline offsets show|reset`).

- `plan`: choosing partitions and computing the new offsets and their effect (pure).
- `group`: the Kafka side (AdminClient): the group's members, committed offsets, retained ranges, offsets
  by time, and altering the committed offsets (which the broker itself refuses while the group has members).
"""

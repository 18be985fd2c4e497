"""Several aiosfu nodes as one service (issue 13, docs/design/scale-out-plan.md §4): the room
directory in Redis (:mod:`signaling.cluster.directory`)."""

"""The defaults of a record, in one place: the CLI's options, RecordConfig, BenchConfig and the
README's table all take them from here."""

QUEUES = 4  # worker queues (--queues)
SNAPSHOT_EVERY = 1000  # input packets between snapshots (--snapshot-every)
FLUSH_EVERY = 32  # records per log chunk at most: group commit (--flush-every)
SEED = 1  # of the chaos schedule, of ctx.random() and of crash-point samples (--seed)

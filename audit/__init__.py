"""The hash-chained, append-only audit log: the bottom app, which every other app may write to."""

"""A tiny ledger: accounts and transfers applied by a ``cluster_task``, exactly once each."""

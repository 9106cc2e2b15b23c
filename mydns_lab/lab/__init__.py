"""The multi-process lab on one host: launcher, Raft server processes, the
router with the fault layer, the launcher's state and its dashboard."""

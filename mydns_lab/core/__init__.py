"""The Raft core's pure helpers: the log, quorum arithmetic, per-follower
progress, and the messages nodes exchange. No I/O, no clock, no global
randomness; imports nothing outside this folder."""

"""The original's experiments against a running lab: the correctness and
flood workloads, the lab as a subprocess, and the servers x clerks grid."""

"""The deterministic simulator: the engine, its network, the safety
invariants, and `python -m mydns_lab.sim`."""

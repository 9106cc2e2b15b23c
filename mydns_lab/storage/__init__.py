"""Where a node's durable state lives: the `Storage` contract with
`MemoryStorage` (base), and the CRC-framed files of a real server (files)."""

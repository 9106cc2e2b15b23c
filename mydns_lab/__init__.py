"""MyDNS: dynamic DNS on a Raft-replicated record store."""

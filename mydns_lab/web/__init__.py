"""HTTP on each front end (``--http-port``): dyndns2 updates for the world's
update clients, the status page, Prometheus metrics, and health checks."""

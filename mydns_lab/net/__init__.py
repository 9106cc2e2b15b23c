"""How lab processes talk: envelope batches over pipes, the fault layer the
router and the simulator apply, the clerk pool of a front end, the front
ends' UDP socket loop, and the child-process helper."""

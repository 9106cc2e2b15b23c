"""The linearizability checker: the search, the models, the history formats
it reads, the HTML timeline of a violation, and its command line."""

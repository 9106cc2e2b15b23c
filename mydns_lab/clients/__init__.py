"""The clients: JSON over UDP, put.py, query.py and the command-line pieces
they share. They import nothing of the servers."""

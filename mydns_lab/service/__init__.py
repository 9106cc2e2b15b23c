"""The front end each clerk process runs, on UDP and TCP port ``--port + i``
(and HTTP on ``--http-port + i``), answered through the cluster or etcd:

* :mod:`.settings`: its flags (:class:`FrontEndSettings`) and counters;
* :mod:`.jsonfront`: the JSON protocol, the original program's made honest;
* :mod:`.dnsfront`: DNS over UDP and TCP, from the copy of the records or
  read through the cluster; the UDP side also hands JSON to ``jsonfront``;
* :mod:`.process`: binding the sockets, serving until SIGTERM, and telling
  the launcher how it went (``run_clerk``, ``serve_alone``).
"""

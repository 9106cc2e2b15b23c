"""What multiprocessing's fork server imports before it forks the lab's
children (see ``launcher._ctx``): the code of the router, the servers and
the front ends, so that no child imports it again; and the fork server's
title in ``ps`` and ``top``, ``mydns forkserver``.

Only the fork server imports this module: importing it renames the process.
"""

from ..net.procs import set_role_title
from ..service import process
from . import router, server

PRELOADED = (router, server, process)
"""The children's entry points' modules: imported once, here."""

set_role_title("forkserver")

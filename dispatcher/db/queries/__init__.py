"""Every DML statement of the product, named, with its parameters in the comment above it.

One module per area, re-exported here: callers write `queries.CLAIM_DELIVERIES` wherever the
statement lives, and `tests/integration/test_queries.py` PREPAREs every one of them against
the migrated schema (and checks that each statement of every module is re-exported here).
"""

from dispatcher.db.queries.endpoints import *  # noqa: F403
from dispatcher.db.queries.gauges import *  # noqa: F403
from dispatcher.db.queries.history import *  # noqa: F403
from dispatcher.db.queries.idempotency import *  # noqa: F403
from dispatcher.db.queries.ingest import *  # noqa: F403
from dispatcher.db.queries.partitions import *  # noqa: F403
from dispatcher.db.queries.queue import *  # noqa: F403
from dispatcher.db.queries.retention import *  # noqa: F403
from dispatcher.db.queries.tenants import *  # noqa: F403
from dispatcher.db.queries.usage import *  # noqa: F403

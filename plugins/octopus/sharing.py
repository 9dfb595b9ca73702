"""The decisions of the worker-sharing DAGs, re-exported from the modules that hold them by role.

Pure decisions (no I/O, no Airflow imports), unit-testable without a server:

| module | what |
|---|---|
| :mod:`octopus.naming` | clouds, pool names, the deployment prefix, a record's identity (its thumbprint) |
| :mod:`octopus.shapes` | the typed shapes that cross XCom, the outcomes a share counts |
| :mod:`octopus.errors` | one error type per meaning: bad input, lease held, foreign record in the way |
| :mod:`octopus.discovery` | the spaces holding each pool, the pinned initial space, the spaces a run visits |
| :mod:`octopus.registration` | the wait: which instances registered, the fleet they form |
| :mod:`octopus.share_plan` | one space's share writes (ownership by sealed evidence) |
| :mod:`octopus.retire_plan` | one space's retire writes |
| :mod:`octopus.summary` | the spaces × clouds table, what the evidence may forget |

``octopus.sharing`` keeps every name importable from where it always was.
"""

from __future__ import annotations

from octopus.discovery import (  # noqa: F401
    check_map_length,
    choose_initial_space,
    id_order,
    plan_fleets,
    resolve_targets,
    spaces_to_visit,
)
from octopus.errors import (  # noqa: F401
    ForeignRecordError,
    LeaseHeldError,
    SharingError,
    SpaceAccessError,
)
from octopus.naming import (  # noqa: F401
    ASSET_ALIAS,
    DEFAULT_INSTANCE_COUNT,
    DEFAULT_NAME_PREFIX,
    DEFAULT_POOL_NAME_TEMPLATE,
    NAME_PREFIX_MAX,
    NAME_PREFIX_PATTERN,
    POLLING,
    STALE_HEALTH,
    SUPPORTED_CLOUDS,
    fleet_name_prefix,
    is_polling,
    pool_name,
    pool_names,
    record_key,
    same_name,
    thumbprint_of,
    validate_prefix,
)
from octopus.registration import (  # noqa: F401
    FIRST_POLL_SECONDS,
    Instance,
    describe_registration,
    fleet_from,
    instances_before_from,
    instances_from,
    next_poll_interval,
    registered_before_from,
    registration_status,
)
from octopus.retire_plan import (  # noqa: F401
    plan_retire,
)
from octopus.shapes import (  # noqa: F401
    OUTCOMES,
    Fleet,
    FleetPlan,
    FleetWorker,
    Op,
    OwnedRecord,
    PoolVisit,
    Role,
    SpaceRef,
    SpaceResult,
    SpaceVisit,
)
from octopus.share_plan import (  # noqa: F401
    RecordWrites,
    new_worker_body,
    plan_space,
    thumbprint_set,
)
from octopus.summary import (  # noqa: F401
    compact_evidence,
    format_table,
    summarize,
)

"""The admin audit log: every admin write (and denied attempt), append-only, as a SHA-256 hash chain.

- ``record``: the entry a caller builds (``AdminAuditEntry``) and the row it reads back (``AuditRow``);
- ``mask``: ``mask_secrets``, applied to ``before``/``after`` so secrets never reach the log;
- ``chain``: the canonical encoding of a row and the link hash;
- ``log``: ``append`` / ``append_in`` (Trio, PostgreSQL);
- ``verify``: ``verify``, which streams the chain and reports broken links (Trio, PostgreSQL);
- ``query``: ``list_entries``, filtered keyset pages for the admin API (Trio, PostgreSQL).

The first three are pure and re-exported here; import the other three from their modules
(``from nexus.controlplane.audit.log import append``), so that importing the package
loads neither Trio nor psycopg.
"""

from nexus.controlplane.audit.mask import MASK, mask_secrets
from nexus.controlplane.audit.record import AdminAuditEntry, AuditError, AuditRow

__all__ = ["MASK", "AdminAuditEntry", "AuditError", "AuditRow", "mask_secrets"]

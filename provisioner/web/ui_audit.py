"""Dashboard view of the audit trail: the newest rows and whether the hash chain holds (docs/audit.md)."""

from __future__ import annotations

from provisioner import audit
from provisioner.web.access import get_store
from provisioner.web.ui_base import bp, page

PAGE_ROWS = 200


@bp.get("/audit", endpoint="audit")
def audit_page():
    store = get_store()
    rows = store.audit_rows(since_id=max(0, store.last_audit_id() - PAGE_ROWS), limit=PAGE_ROWS)
    return page("audit.html", rows=list(reversed(rows)), verdict=audit.verify(store), active="audit")

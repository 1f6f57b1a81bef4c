"""Store: update repository records (migration 11), their events, and removal refused while a run uses one."""

from __future__ import annotations

import pytest

from provisioner.store import ConflictError, NotFoundError, UpdateRepo


def _bundle(name="xs84") -> UpdateRepo:
    return UpdateRepo(name=name, kind="bundle", source="/tmp/x.xsbundle", path=f"/data/updates/{name}",
                      bundle_file="bundle.xsbundle", sha256="ab" * 32, size=1234, product_version="8.4.0",
                      signed=True, details={"updates": [{"id": "XS8E001"}], "update_level": "2024-05-01 00:00:00"})


def test_add_get_list_remove_with_events(store):
    added = store.add_update_repo(_bundle())
    assert added.update_ids == ["XS8E001"] and added.update_level == "2024-05-01 00:00:00" and added.signed
    assert added.added_at and store.get_update_repo("xs84") == added
    mirror = store.add_update_repo(UpdateRepo(name="cdn", kind="mirror", source="http://m/x/",
                                              url="http://m/x/", checked=False))
    assert [r.name for r in store.list_update_repos()] == ["cdn", "xs84"] and not mirror.checked
    with pytest.raises(ConflictError, match="already exists"):
        store.add_update_repo(_bundle())
    assert store.remove_update_repo("xs84").name == "xs84" and store.get_update_repo("xs84") is None
    with pytest.raises(NotFoundError, match="no update repository named 'xs84'"):
        store.remove_update_repo("xs84")
    kinds = [e["kind"] for e in store.events() if e["kind"].startswith("updates.")]
    assert kinds == ["updates.added", "updates.added", "updates.removed"]


def test_remove_refused_while_a_run_names_it(store):
    store.add_update_repo(_bundle())
    store.add_pool("p", "http://x", "root", "pw")
    run = store.create_run("r1", "p", "m84", stop_on_failure=True, hosts=[])
    store.add_event("run.options", run_id=run.id, details={"updates": "xs84", "migrate_back": True})
    with pytest.raises(ConflictError, match=f"used by run.*{run.id}"):
        store.remove_update_repo("xs84")
    assert store.get_update_repo("xs84") is not None
    store.set_run_state(run.id, "aborted", reason="test")
    assert store.runs_using_updates("xs84") == []
    store.remove_update_repo("xs84")

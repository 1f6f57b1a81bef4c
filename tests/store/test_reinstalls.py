"""store.reinstalls: one flow per host, steps only along the table, one arming ever, the hash kept out of sight."""

import pytest
from helpers import make_media_tree

from provisioner import media, states
from provisioner.boot import attempts
from provisioner.model import Host
from provisioner.store import ConflictError, Store

MAC = "52:54:00:aa:00:01"
HASH = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


@pytest.fixture
def ready(store, config, tmp_path):
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    store.add_host(Host.from_fields({"mac": MAC, "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/scsi-1"}))
    return store


def create(store, forget=True):
    return store.create_reinstall(MAC, "p1", "xs84", host_name="h1", forget_first=forget, old_uuid="u-old",
                                  old_pool="p1", host_url="http://10.0.0.11/", network={"mode": "dhcp", "dns": []},
                                  root_password_hash=HASH)


def test_migration_6_creates_the_table(ready):
    assert ready.schema_version() >= 6
    assert ready.list_reinstalls() == []


def test_one_flow_per_host_and_steps_follow_the_table(ready):
    first = create(ready)
    assert first.step == states.RI_FORGET and ready.active_reinstall(MAC).id == first.id
    with pytest.raises(ConflictError, match="already has reinstall"):
        create(ready, forget=False)
    with pytest.raises(states.InvalidTransition):
        ready.set_reinstall_step(first.id, states.RI_JOIN)
    with pytest.raises(ValueError, match="cannot be changed"):
        ready.set_reinstall_step(first.id, None, root_password_hash="x")
    failed = ready.set_reinstall_step(first.id, states.RI_FAILED, reason="forget: HOST_IS_LIVE")
    assert failed.reason == "forget: HOST_IS_LIVE" and failed.root_password_hash is None  # dropped at the end
    assert ready.active_reinstall(MAC) is None
    assert create(ready, forget=False).step == states.RI_ARM  # a new flow may start after a terminal one
    kinds = [e["kind"] for e in ready.events(mac=MAC)]
    assert kinds[-3:] == ["reinstall.forget", "reinstall.failed", "reinstall.arm"]


def test_armed_once_in_one_transaction_with_the_link(ready, config):
    found = create(ready, forget=False)
    attempt = attempts.arm_fresh_install(ready, found.id)
    assert attempt.max_runs == 1 and attempt.state == states.ARMED
    linked = ready.reinstall_for_attempt(attempt.id)
    assert linked.id == found.id and linked.step == states.RI_INSTALLING and linked.attempt_id == attempt.id
    with pytest.raises(ConflictError, match="armed once, never again"):
        attempts.arm_fresh_install(ready, found.id)
    assert len(ready.list_attempts(MAC)) == 1
    armed = ready.events(mac=MAC, kind="attempt.armed")[-1]["details"]
    assert armed["kind"] == "fresh-install"
    ready.disarm_attempts(MAC)
    other = attempts.arm(ready, config, MAC, "xs84")
    assert ready.reinstall_for_attempt(other.id) is None  # an ordinary attempt is never a fresh-install one


def test_hash_never_shown_and_cleared_once_served(ready):
    found = create(ready)
    assert HASH not in repr(found) and "root_password_hash" not in found.as_dict()
    assert not [e for e in ready.events() if HASH in str(e["details"])]
    ready.clear_reinstall_hash(found.id)
    assert ready.get_reinstall(found.id).root_password_hash is None


def test_a_reopened_store_keeps_the_flow(ready, config):
    found = create(ready)
    again = Store.from_config(config)
    try:
        assert again.active_reinstall(MAC).id == found.id and again.get_reinstall(found.id).network["mode"] == "dhcp"
    finally:
        again.close()


def test_accepted_data_loss_is_journaled_with_the_flow_and_read_back(ready):
    disks = [{"vm": "db1", "power_state": "Suspended", "role": "suspend image", "vdi": "Suspend image for db1",
              "vdi_uuid": "v-1", "size": 4, "sr": "Local storage", "sr_uuid": "s-1", "vm_uuid": "m-1",
              "snapshot_of": ""}]
    found = ready.create_reinstall(MAC, "p1", "xs84", host_name="h1", forget_first=False, old_uuid=None,
                                   old_pool=None, host_url="http://10.0.0.11/", network={"mode": "dhcp", "dns": []},
                                   root_password_hash=HASH, data_lost=disks)
    assert ready.data_lost(found) == disks
    event = ready.events(mac=MAC, kind="reinstall.data_lost")[-1]["details"]
    assert event == {"reinstall": found.id, "accepted": True, "disks": disks}
    ready.set_reinstall_step(found.id, states.RI_FAILED, reason="test")
    assert ready.data_lost(create(ready, forget=False)) == []  # another flow of the host lost nothing


def test_join_refused_is_a_waiting_step_that_stays_active(ready):
    found = create(ready, forget=False)
    with ready._tx() as conn:  # straight to JOIN, as a flow that got that far
        conn.execute("UPDATE reinstalls SET step = ? WHERE id = ?", (states.RI_JOIN, found.id))
    waiting = ready.set_reinstall_step(found.id, states.RI_JOIN_REFUSED, reason="pool.join refused: ...")
    assert waiting.root_password_hash == HASH and ready.active_reinstall(MAC).id == found.id  # not final
    with pytest.raises(ConflictError, match="already has reinstall"):
        create(ready)
    assert ready.set_reinstall_step(found.id, states.RI_JOIN).step == states.RI_JOIN  # the operator's retry
    assert states.RI_JOIN_REFUSED not in states.REINSTALL_TERMINAL

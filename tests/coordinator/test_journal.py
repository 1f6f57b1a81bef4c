"""The run journal (coordinator.journal): entries committed to the store, read back in order, per run and host."""

from __future__ import annotations

from provisioner.coordinator import journal


def test_write_read_last_per_run_and_host(store):
    journal.write(store, "r1", journal.VM_STOP, mac="aa:bb:cc:dd:ee:01", uuid="u1", name="vm1")
    journal.write(store, "r1", journal.VM_STOP, mac="aa:bb:cc:dd:ee:02", uuid="u2", name="vm2")
    journal.write(store, "r2", journal.VM_STOP, mac="aa:bb:cc:dd:ee:01", uuid="u3", name="vm3")
    assert [e["uuid"] for e in journal.read(store, "r1", journal.VM_STOP)] == ["u1", "u2"]
    assert journal.read(store, "r1", journal.VM_STOP, mac="aa:bb:cc:dd:ee:02") == [
        {"uuid": "u2", "name": "vm2", "mac": "aa:bb:cc:dd:ee:02"}]
    assert journal.last(store, "r1", journal.VM_STOP)["uuid"] == "u2"
    assert journal.last(store, "r1", journal.VM_STOPPED) is None
    assert journal.read(store, "r3", journal.VM_STOP) == []


def test_read_pages_past_the_event_query_limit(store):
    for i in range(1203):
        journal.write(store, "big", journal.WARNING, text=f"w{i}")
    found = journal.read(store, "big", journal.WARNING)
    assert len(found) == 1203 and found[0]["text"] == "w0" and found[-1]["text"] == "w1202"


def test_options_default_to_the_safe_choice(store):
    assert journal.options(store, "old-run") == {"disable_ha_wlb": False, "migrate_back": False, "power_cycle": False,
                                                 "consent": (), "updates": None}
    journal.write(store, "new-run", journal.OPTIONS, disable_ha_wlb=True, migrate_back=False)  # before power_cycle
    assert journal.options(store, "new-run") == {"disable_ha_wlb": True, "migrate_back": False, "power_cycle": False,
                                                 "consent": (), "updates": None}
    journal.write(store, "updated", journal.OPTIONS, disable_ha_wlb=False, updates="xs84u")  # --updates NAME
    assert journal.options(store, "updated")["updates"] == "xs84u"
    journal.write(store, "cycled", journal.OPTIONS, disable_ha_wlb=False, migrate_back=False, power_cycle=True)
    assert journal.options(store, "cycled")["power_cycle"] is True


def test_warn_is_a_warning_entry_with_its_host(store):
    journal.warn(store, "r1", "SR x not plugged", mac="aa:bb:cc:dd:ee:01")
    journal.warn(store, "r1", "pool-level")
    assert [(w["text"], w["mac"]) for w in journal.read(store, "r1", journal.WARNING)] == [
        ("SR x not plugged", "aa:bb:cc:dd:ee:01"), ("pool-level", None)]

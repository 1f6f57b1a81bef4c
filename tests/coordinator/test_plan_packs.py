"""`upgrade plan` shows which host gets which driver disk / supplemental pack (PlannedHost.packs, text and JSON)."""

from __future__ import annotations

from labs import MEDIA, POOL
from pack_trees import make_pack_tree
from provisioner import output, packs
from provisioner.coordinator.plan import make_plan


def test_plan_names_each_hosts_packs(lab, tmp_path):
    packs.import_pack(lab.store, lab.config, MEDIA, make_pack_tree(tmp_path / "raid", "megaraid", version="7.7",
                                                                   drivers=["megaraid_sas-module"]),
                      hosts=[lab.mac(1)])
    packs.import_pack(lab.store, lab.config, MEDIA, make_pack_tree(tmp_path / "tools", "acme-tools", requires=None),
                      name="tools")
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert plan.ok, plan.problems
    got = {h.mac: [(p["name"], p["kind"]) for p in h.packs] for h in plan.hosts}
    assert got == {lab.mac(0): [("tools", "pack")], lab.mac(1): [("raid", "driver"), ("tools", "pack")],
                   lab.mac(2): [("tools", "pack")]}
    member = next(h for h in plan.as_dict()["hosts"] if h["mac"] == lab.mac(1))
    assert member["packs"] == [{"name": "raid", "kind": "driver", "label": "megaraid", "version": "7.7"},
                               {"name": "tools", "kind": "pack", "label": "acme-tools", "version": "1.2.0"}]
    text = output.plan(plan)
    name = next(h.name for h in plan.hosts if h.mac == lab.mac(1))
    assert f"{name}: gets driver disk raid (megaraid 7.7), supplemental pack tools (acme-tools 1.2.0)" in text

"""The wave planner (coordinator/waves.py): headroom gives wave sizes, no headroom waves of 1 with why, group tags,
HA failures to tolerate, the --parallel cap, dom0 growth; and the option parsers."""

from __future__ import annotations

import re

import pytest

from provisioner.coordinator.waves import GiB, HostCap, parse_max_failures, parse_parallel, plan_waves

VM = 4 * GiB


def pool(n: int, free_vms: float, *, vms: int = 4, groups: list[str] | None = None, growth: int = 0):
    """n hosts with `vms` VMs of 4 GiB each and room for `free_vms` more: (master, members)."""
    hosts = [HostCap(f"h{i}", int(free_vms * VM), tuple((f"h{i}-vm{j}", VM) for j in range(vms)), growth,
                     (groups[i],) if groups else ()) for i in range(n)]
    return hosts[0], hosts[1:]


def sizes(plan) -> list[int]:
    return [len(w.hosts) for w in plan.waves]


def test_headroom_gives_waves_larger_than_one_and_says_why():
    master, members = pool(16, 4 / 3)  # 4 VMs use 75% of what a host has for VMs: 25% headroom
    plan = plan_waves(master, members, "auto")
    assert plan.waves[0].hosts == ("h0",) and "master" in plan.waves[0].why
    assert sum(sizes(plan)[1:]) == 15 and max(sizes(plan)) >= 3
    assert len(plan.waves) <= 7  # 16 one at a time
    assert [h for w in plan.waves for h in w.hosts] == [f"h{i}" for i in range(16)]  # the order is kept
    stopped = plan.waves[1]
    assert stopped.why.startswith(f"{len(stopped.hosts)} hosts: adding h{len(stopped.hosts) + 1}: its VMs need")


def test_no_headroom_gives_waves_of_one_and_says_why():
    master, members = pool(5, 1)  # room for one VM per host: a host's 4 VMs need 4 others
    plan = plan_waves(master, members, "auto")
    assert sizes(plan) == [1, 1, 1, 1, 1]
    assert re.match(r"1 host: adding h2: its VMs need \d+\.0 GiB; the hosts staying enabled have \d+\.0 GiB free, "
                    r"and VM h\d-vm\d \(4\.0 GiB\) would fit on none of them", plan.waves[1].why), plan.waves[1].why
    assert plan.waves[-1].why == "1 host: the last host"


def test_a_host_that_fits_nowhere_even_alone_gets_its_own_wave_and_the_reason():
    master = HostCap("h0", 2 * VM)
    members = [HostCap("h1", 2 * VM, (("big", 10 * VM),)), HostCap("h2", 2 * VM), HostCap("h3", 2 * VM)]
    plan = plan_waves(master, members, "auto")
    assert sizes(plan) == [1, 1, 2]
    assert plan.waves[1].why == "1 host: even alone its VMs need 40.0 GiB; the hosts staying enabled have 24.0 GiB " \
        "free, and VM big (40.0 GiB) would fit on none of them"


def test_two_hosts_of_one_group_never_share_a_wave():
    groups = ["rack:A", "rack:A", "rack:A", "rack:B", "rack:B", "rack:C"]
    master, members = pool(6, 10, groups=groups)  # plenty of room: only the groups split the waves
    plan = plan_waves(master, members, "auto")
    for wave in plan.waves:
        tags = [groups[int(h[1:])] for h in wave.hosts]
        assert len(tags) == len(set(tags)), wave
    assert plan.waves[1].hosts == ("h1", "h3", "h5")
    assert "kept for a later wave: h2 (shares rack:A)" in plan.waves[1].why


def test_the_parallel_cap():
    master, members = pool(9, 10)
    plan = plan_waves(master, members, "3")
    assert sizes(plan) == [1, 3, 3, 2]
    assert plan.waves[1].why == "3 hosts: the --parallel 3 cap"
    assert plan.waves[-1].why == "2 hosts: every host left fits"
    assert sizes(plan_waves(master, members, "auto"))[1] > 3


def test_ha_failures_to_tolerate_shrink_the_waves():
    master, members = pool(10, 2)
    free = plan_waves(master, members, "auto")
    kept = plan_waves(master, members, "auto", ha_tolerate=1)
    assert max(sizes(kept)[1:]) < max(sizes(free)[1:])
    assert any("HA's 1 host failure(s) to tolerate would not be kept" in w.why for w in kept.waves)


def test_dom0_growth_after_the_upgrade_counts():
    master, members = pool(8, 2)
    grown = [HostCap(h.name, h.free, h.vms, 2 * GiB) for h in [master, *members]]
    assert sum(sizes(plan_waves(grown[0], grown[1:], "auto"))) == 8
    assert len(plan_waves(grown[0], grown[1:], "auto").waves) > len(plan_waves(master, members, "auto").waves)


def test_hosts_upgraded_already_take_vms():
    _, members = pool(4, 0)
    empty = HostCap("done", 16 * VM)
    plan = plan_waves(None, members, "auto", upgraded=(empty,))
    assert sizes(plan) == [3] and plan.waves[0].number == 1


@pytest.mark.parametrize("given,expected", [(None, None), ("", None), ("auto", "auto"), ("AUTO", "auto"), (4, "4"),
                                            ("1", "1")])
def test_parse_parallel(given, expected):
    assert parse_parallel(given) == expected


@pytest.mark.parametrize("given", ["0", "-1", "many", "2.5"])
def test_parse_parallel_refuses(given):
    with pytest.raises(ValueError, match="--parallel takes"):
        parse_parallel(given)


@pytest.mark.parametrize("given,members,expected", [(None, 10, None), ("2", 10, 2), ("25%", 16, 4), ("10%", 5, 1),
                                                    ("100%", 3, 3)])
def test_parse_max_failures(given, members, expected):
    assert parse_max_failures(given, members) == expected


@pytest.mark.parametrize("given", ["0", "0%", "150%", "x"])
def test_parse_max_failures_refuses(given):
    with pytest.raises(ValueError, match="--max-failures takes"):
        parse_max_failures(given, 10)

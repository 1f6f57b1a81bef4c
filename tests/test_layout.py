"""The layout shows the architecture (README.md section "Layout", docs/architecture.md): read every module under
provisioner/ with ast (top-level imports, late ones inside functions, `from . import x`, TYPE_CHECKING ones) and
hold the import graph to the rules. Imports point down only, with no circles; tftp/ knows nothing of boot/; the
simulator reuses none of the product's code for what it checks; each third-party library has one home.

Nothing here imports the product: the files are parsed, so a module that would fail to import is still checked.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "provisioner"

# Bottom to top: a module may import its own layer's modules and the layers below it, never one above.
# A unit is a top-level module (provisioner.config) or package (provisioner.boot); the root package
# (provisioner/__init__.py: the lazy create_app) and __main__ sit on top.
LAYERS: list[tuple[str, set[str]]] = [
    ("leaves", {"config", "model", "states", "logs", "metrics", "paths", "staging", "output", "progress", "cryptpw",
                "credentials", "pollselect", "auditchain", "netports"}),
    ("store", {"store"}),
    ("subsystems", {"boot", "tftp", "power", "xapi", "xapi_model", "xapi_reinstall", "xapi_tls", "xapi_checks",
                    "xapi_prechecks", "xapi_members", "xapi_updates", "xapi_vms", "media", "packs", "updates", "registry", "dhcp", "sites",
                    "mediasync",
                    "eventwriter", "audit", "tokens", "webhooks"}),
    ("coordinator", {"coordinator"}),
    ("doctor", {"doctor"}),  # provisioner doctor: reads the store, boot, dhcp, pools (coordinator)
    ("web", {"web"}),
    ("top", {"cli", "runtime", "demo", "", "__main__"}),
]
LAYER = {unit: (i, name) for i, (name, units) in enumerate(LAYERS) for unit in units}

SIMULATOR = "simulator"
"""A test instrument, outside the layers: it talks to the product over the wire only (docs/simulator.md section
"The simulated firmware and installer"); tests/simulator/test_imports.py holds its own modules to the same."""
SIMULATOR_MAY_IMPORT = {
    "provisioner.tftp.client": "the simulated firmware's TFTP download: it moves bytes and checks nothing",
    "provisioner.cryptpw": "the simulated installer stores and checks root's crypt(3) hash; cryptpw follows the "
                           "public SHA-crypt specification and is held to its test vectors (tests/test_cryptpw.py), "
                           "so agreeing with it is agreeing with the spec, not with our answer-file code",
    "provisioner.pollselect": "select.select over poll(2) under pyghmi's BMC server loop: it waits for sockets "
                              "and checks nothing",
    "provisioner.netports": "the listening ports of the Redfish emulator and of each host's XAPI, drawn below the "
                            "ephemeral range: it picks a number and checks nothing",
}
SIMULATOR_USERS = {"demo", "cli"}
"""The only units that may start the simulator (`provisioner demo`, `provisioner simulator`); runtime never does."""

LIBRARIES = {  # third-party top-level name -> its one home (a module, or a package and everything in it)
    "XenAPI": "provisioner.xapi",
    "flask": "provisioner.web",
    "werkzeug": "provisioner.web",  # Flask's own toolkit: file responses and password hashing in web/
    "itsdangerous": "provisioner.web",  # Flask's signer: the login cookie in web/gate.py
    "waitress": "provisioner.web.server",
    "tftpy": "provisioner.tftp",
    "jinja2": "provisioner.boot.render",
    "click": "provisioner.cli",
    "cryptography": ("provisioner.credentials",
                     "provisioner.simulator.certs"),  # the simulated hosts' self-signed XAPI certificates
    "prometheus_client": "provisioner.metrics",
    "pycdlib": "provisioner.media",
    "requests": "provisioner.simulator.machine",  # the simulated firmware's HTTP client (iPXE/GRUB fetches)
    "sqlite3": ("provisioner.store",  # standard library, but the only SQL lives in store/
                # ... and the Redfish front writes the sushy-tools fake driver's own state file (docs/power.md)
                "provisioner.simulator.bmc_redfish"),
    "psycopg": "provisioner.store.postgres",  # the PostgreSQL backend (database_url)
    "sushy": "provisioner.power.redfish",
    "pyghmi": ("provisioner.power.ipmi",
               "provisioner.simulator.bmc_ipmi"),  # the simulator's IPMI BMC is pyghmi's own BMC server class
    "bcrypt": "provisioner.simulator.bmc_redfish",  # the emulator's htpasswd file takes bcrypt digests only
}
"""A library with a tuple has one home per side: the product's adapter and the simulator's front."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _known(name: str) -> str:
    """The module `name` names, or the nearest enclosing module (an attribute of a module or package)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(provisioner modules imported, other top-level names imported), each with its line number."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours, others = [], []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "provisioner" or target.startswith("provisioner."):
                ours.append((_known(target), node.lineno))
            else:
                others.append((target.split(".")[0], node.lineno))
    return ours, others


def _read() -> tuple[dict[str, set[str]], dict[tuple[str, str], int], list[tuple[str, str, int]]]:
    """The module graph (module -> modules it imports), the line of each edge's first import, and every
    non-provisioner import as (module, top-level name, line)."""
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], int] = {}
    external: list[tuple[str, str, int]] = []
    for name, path in MODULES.items():
        ours, others = _imports(name, path)
        for target, line in ours:
            if target != name:
                graph[name].add(target)
                where.setdefault((name, target), line)
        external.extend((name, lib, line) for lib, line in others)
    return graph, where, external


GRAPH, WHERE, EXTERNAL = _read()


def unit(module: str) -> str:
    """provisioner.boot.policy -> boot; provisioner.config -> config; provisioner -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edge(source: str, target: str) -> str:
    return f"{source} -> {target} ({MODULES[source].relative_to(PACKAGE.parent)}:{WHERE[(source, target)]})"


def _cycles() -> list[list[str]]:
    """One cycle through each strongly connected component of the module graph (Tarjan), as a module path."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_a_cycle(v, component))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return found


def _a_cycle(start: str, component: set[str]) -> list[str]:
    """A shortest path from `start` back to itself inside `component` (breadth first)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(GRAPH[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def test_the_graph_was_read():
    assert len(MODULES) > 50 and "provisioner.boot.policy" in MODULES and "provisioner.tftp.server" in MODULES
    assert "provisioner.store" in GRAPH["provisioner.eventwriter"]  # a plain `from provisioner.store import`
    assert "provisioner.web.app" in GRAPH["provisioner"]  # a late import inside a function


def test_no_import_circles():
    cycles = _cycles()
    assert not cycles, "import circles:\n" + "\n".join(
        "  " + "\n    ".join(_edge(a, b) for a, b in zip(cycle, cycle[1:])) for cycle in cycles)


def test_tftp_imports_nothing_from_boot():
    bad = [_edge(s, t) for s in MODULES for t in sorted(GRAPH[s]) if unit(s) == "tftp" and unit(t) == "boot"]
    assert not bad, "tftp/ must know nothing of boot/ (it asks its one callback for a name):\n" + "\n".join(bad)


def test_every_unit_has_a_layer():
    placed = {u for u in map(unit, MODULES) if u in LAYER or u == SIMULATOR}
    assert placed == set(map(unit, MODULES)), f"place in LAYERS: {sorted(set(map(unit, MODULES)) - placed)}"


def test_imports_point_down():
    up = []
    for source in sorted(MODULES):
        for target in sorted(GRAPH[source]):
            s, t = unit(source), unit(target)
            if s == t or SIMULATOR in (s, t) or s not in LAYER or t not in LAYER:
                continue  # within a unit: the circle test; the simulator: its own tests
            if LAYER[t][0] > LAYER[s][0]:
                up.append(f"{_edge(source, target)}: {LAYER[s][1]} imports {LAYER[t][1]}")
    assert not up, "imports pointing up the layers:\n" + "\n".join(up)


def test_the_simulator_reuses_none_of_the_product():
    bad = [_edge(s, t) for s in MODULES for t in sorted(GRAPH[s])
           if unit(s) == SIMULATOR and unit(t) != SIMULATOR and t not in SIMULATOR_MAY_IMPORT]
    assert not bad, "the simulator implements the client side itself (docs/simulator.md):\n" + "\n".join(bad)


def test_only_demo_and_cli_start_the_simulator():
    bad = [_edge(s, t) for s in MODULES for t in sorted(GRAPH[s])
           if unit(t) == SIMULATOR and unit(s) not in SIMULATOR_USERS | {SIMULATOR}]
    assert not bad, "the product never imports its test instrument:\n" + "\n".join(bad)


def _home(module: str, home: str) -> bool:
    return module == home or module.startswith(home + ".")


def _homes(lib: str) -> tuple[str, ...]:
    home = LIBRARIES[lib]
    return home if isinstance(home, tuple) else (home,)


def test_each_third_party_library_has_one_home():
    stdlib = set(sys.stdlib_module_names) - set(LIBRARIES)
    bad = []
    for module, lib, line in EXTERNAL:
        if lib in stdlib or lib == "__future__":
            continue
        where = f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}"
        if lib not in LIBRARIES:
            bad.append(f"{where}: {lib} has no home in LIBRARIES (give it one module or one adapter package)")
        elif not any(_home(module, home) for home in _homes(lib)):
            bad.append(f"{where}: {lib} is imported only in {' and '.join(_homes(lib))}")
    assert not bad, "\n".join(bad)


def test_the_readme_layout_names_every_unit():
    """README.md "Layout" is the map a newcomer reads first: every top-level module and package is in its table,
    and nothing it names is gone."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first = row.split("|")[1]
            named |= {n.strip().strip("`").removesuffix("/").removesuffix(".py") for n in first.split(",")}
    units = {unit(m) for m in MODULES} - {"", "__main__"}
    assert units - named == set(), f"add to README Layout: {sorted(units - named)}"
    assert named - units == set(), f"README Layout names what is not there: {sorted(named - units)}"

"""Which installed versions the media can upgrade (docs/prechecks.md MEDIA_SOURCE_VERSION,
SAME_VERSION_OTHER_BUILD).

The media carries no allow-list: `.treeinfo` names the product and platform version it installs (media.py), and
the source versions an upgrade accepts are compiled into its installer (host-installer upgrade.py ThirdGenUpgrader
`upgrades_versions = [(product.XENSERVER_MIN_VERSION, product.THIS_PLATFORM_VERSION)]`, product.py
XENSERVER_MIN_VERSION = platform 2.1.0, XenServer 7.0): an installation whose platform version is outside that
range is not offered for upgrade. That range, with the media's platform_version as its top, is what we check.
"""

from __future__ import annotations

from provisioner import packs, sites
from provisioner.coordinator.checks import CONSENT, ERROR, WARNING
from provisioner.model import Media, version_tuple

XENSERVER_MIN_PLATFORM = (2, 1, 0)  # host-installer product.py XENSERVER_7_0_0


def run(plan, media: Media, hosts: dict, infos: dict) -> None:
    """hosts: xapi_prechecks.HostFacts by ref; infos: xapi HostInfo by ref; only the hosts the plan upgrades."""
    top = version_tuple(media.platform_version) if media.platform_version else None
    for planned in plan.to_upgrade:
        found, info = hosts.get(planned.ref), infos.get(planned.ref)
        if found is None or info is None:
            continue
        platform = version_tuple(found.platform_version) if found.platform_version else None
        if platform is not None and (platform < XENSERVER_MIN_PLATFORM or (top is not None and platform > top)):
            plan.check("MEDIA_SOURCE_VERSION", f"platform version {found.platform_version} ({info.product_version}) "
                       f"is outside what the media's installer upgrades (platform 2.1.0, XenServer 7.0, up to "
                       f"{media.platform_version or '?'}): it would not offer this installation for upgrade",
                       "upgrade the host in steps through a version in that range, or reinstall it", info.name, ERROR)
        if (media.build and version_tuple(info.product_version) == media.version_key
                and info.build_number != media.build):
            plan.check("SAME_VERSION_OTHER_BUILD", f"at {info.product_version} build {info.build_number or '?'}, the "
                       f"media is the same version, build {media.build}: the run would re-install the media's build "
                       "over it (updates applied since are replaced)", "use media of the host's build, or "
                       "re-apply it on purpose with --consent SAME_VERSION_OTHER_BUILD", info.name, CONSENT)


def at_sites(plan, store, media: Media, registered: dict) -> None:
    """MEDIA_NOT_AT_SITE: a host of a site whose boot server has no ready copy of the media (docs/sites.md). Its
    installer fetches the media from that server, so the run would fail there mid-install. Media recorded before
    sites (no copy rows at all) is not judged."""
    _packs_at_sites(plan, store, media, registered)
    found = sites.media_availability(store, media.name)
    if not found:
        return
    for planned in plan.to_upgrade:
        host = registered.get(planned.mac)
        if host is None or host.site is None or found.get(host.site, {}).get("state") == "ready":
            continue
        state = found.get(host.site, {}).get("state")
        have = ", ".join(sorted(s for s, info in found.items() if info["state"] == "ready")) or "none"
        plan.check("MEDIA_NOT_AT_SITE", f"site {host.site!r}'s boot server has "
                   f"{'no copy' if state is None else 'a ' + state + ' copy'} of media {media.name} (ready at: "
                   f"{have}); its installer would fetch the media there",
                   f"start `provisioner serve` with site = \"{host.site}\" on this database (it fetches the media "
                   "from a site that has it) or wait until `provisioner media list` shows it ready there; a failed "
                   "copy is retried when that serve restarts", host.name, ERROR)


def _packs_at_sites(plan, store, media: Media, registered: dict) -> None:
    """PACKS_NOT_SYNCED (warning): with more than one site, a host's packs are fetched from its site's server, which
    serves them from the path they were imported to; packs are not synced between servers (docs/sites.md)."""
    if len(store.site_names()) < 2:
        return
    for planned in plan.to_upgrade:
        host = registered.get(planned.mac)
        found = packs.packs_for(store, media.name, host) if host is not None and host.site else []
        if found:
            plan.check("PACKS_NOT_SYNCED", f"its answer file names pack(s) {', '.join(p.name for p in found)} of media "
                       f"{media.name}, fetched from site {host.site!r}'s server, and packs are not synced between "
                       "servers: that server serves them only if their directory exists there",
                       f"make {', '.join(sorted({p.path for p in found}))} present on site {host.site!r}'s server "
                       "(or import the packs through it), then plan again", host.name, WARNING)

"""The call that asks a member itself (coordinator/members.py): host.get_servertime, a no-op the master forwards
to the host (message_forwarding.ml:3831-3836), so it answers only once the member has reconnected to a restarted
master (docs/xapi.md "The pool after its coordinator restarts").

No XenAPI here: it goes through XenApiDriver's `call` (the one funnel of errors: XapiError, XapiUnreachable).
"""

from __future__ import annotations


def servertime(driver, host_ref: str) -> str:
    """The host's own clock (XAPI datetime), answered by the host itself through the master."""
    return str(driver.call("host.get_servertime", host_ref))

"""The exceptions the simulator's parts raise to one another: XAPI failures, dropped connections, failed boots.

A module of their own so that the world, the call handlers, the XML-RPC server and the simulated machine share
them without importing one another.
"""

from __future__ import annotations


class XapiError(Exception):
    """An API error, sent as {"Status": "Failure", "ErrorDescription": [code, *params]} (docs/xapi.md "Wire format")."""

    def __init__(self, code: str, *params):
        super().__init__(code, *params)
        self.code = code
        self.params = [str(p) for p in params]

    @property
    def description(self) -> list[str]:
        return [self.code, *self.params]


class DropConnection(BaseException):
    """Close the connection without an answer (host went down mid-call, or an injected hang ended).

    A BaseException so xmlrpc.server's `except Exception` -> HTTP 500 does not swallow it."""


class BootFailure(RuntimeError):
    """One boot could not go on (a file missing, a config not understood); the firmware reboots."""


class NoBootableSystem(RuntimeError):
    """The disk holds no bootable system (an installer failed while writing the new root): the host stays at
    its firmware, powered on and not live, until something installs it again."""

"""PXE / unattended-install provisioning server for XenServer rolling pool upgrades."""

__version__ = "0.1.0"


def create_app(config=None, store=None):
    """The Flask application factory (lives in provisioner.web.app; imported lazily so that
    importing the package never pulls in Flask or touches the disk)."""
    from provisioner.web.app import create_app as _create_app

    return _create_app(config, store=store)

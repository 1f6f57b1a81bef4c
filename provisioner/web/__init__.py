"""HTTP side: the Flask app factory (app.py), REST API (api.py), boot endpoints (boot.py); every view reaches the
store, config and services through access.py.

Flask is imported only inside this package (its modules are the web adapter layer)."""

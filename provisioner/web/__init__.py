"""HTTP side: the Flask app factory (app.py), REST API (api.py), boot endpoints (boot.py).

Flask is imported only inside this package (its modules are the web adapter layer)."""

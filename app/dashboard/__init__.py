"""The web dashboard: static HTML, CSS and vanilla JavaScript shipped inside the package, served by
the api at /dashboard. It is a client of the HTTP API like any other (same endpoints, same
envelope); it signs in with a cookie session (app/api/sessions.py). See docs/dashboard.md."""

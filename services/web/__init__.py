"""The web front end: a backend-for-frontend over the four services' public APIs (docs/web.md)."""

"""A minimal Oscar project for the integration tests: Oscar's apps, a forked checkout with
the gift-card mixin in front of a second payment method, SQLite in a reusable file."""

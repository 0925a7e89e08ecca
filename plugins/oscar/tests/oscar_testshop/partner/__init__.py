"""Oscar's partner app, forked for its strategy only: gift cards with a typed amount."""

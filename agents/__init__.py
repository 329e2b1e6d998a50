"""Training algorithms for gumbel-rl policies."""

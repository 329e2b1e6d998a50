"""gumbel-rl: discrete-action policies that act and learn through Gumbel-Softmax."""

__version__ = "0.1.0"

"""The bodies of the ``lares-rl`` commands, one module per command, above every stage: lares_rl/cli.py
parses the command line, composes the config and calls one of them."""

"""One module per `manul` subcommand; see agent/cli.py."""

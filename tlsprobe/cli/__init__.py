"""The command line: argument parsing and the subcommands, no probe or exporter logic."""

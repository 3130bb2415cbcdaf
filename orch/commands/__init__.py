"""One module per subcommand; each exposes add_parser(subparsers) and a function of the same name."""

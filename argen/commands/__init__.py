"""One module per ``argen`` subcommand (NAME, HELP, add_arguments, run); `argen.cli` builds the parser from them."""

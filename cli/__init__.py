"""The `guard` command line (cli.main): the application above every other package."""

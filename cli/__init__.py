"""The ``sysmail`` command line."""

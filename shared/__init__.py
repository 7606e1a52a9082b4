"""The domain: models, message types, mail handling, configuration files."""

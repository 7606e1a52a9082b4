"""Configuration files an administrator applies: accounts, templates and the
directory. Each apply checks the whole file, references included, before it
writes anything, and runs in the caller's transaction."""

from shared.configfiles.accounts import PasswordPrompt, account_to_dict, apply_accounts
from shared.configfiles.directory import apply_directory, directory_rows
from shared.configfiles.files import ConfigFile, Tally, parse_text, read
from shared.configfiles.templates import apply_templates, template_to_dict

__all__ = [
    "ConfigFile",
    "PasswordPrompt",
    "Tally",
    "account_to_dict",
    "apply_accounts",
    "apply_directory",
    "apply_templates",
    "directory_rows",
    "parse_text",
    "read",
    "template_to_dict",
]

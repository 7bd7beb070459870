#!/usr/bin/env python
"""Django's command-line utility for the sample project."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Run the management command given on the command line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # Imported after DJANGO_SETTINGS_MODULE is set, as Django's own manage.py does.
    from django.core.management import execute_from_command_line  # noqa: PLC0415

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

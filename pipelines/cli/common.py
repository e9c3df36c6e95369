"""Small helpers the command modules share: yesterday in the reporting time zone, and a copy of
the settings with some fields changed.
"""

from __future__ import annotations

from datetime import date

from pipelines.lib.settings import Settings


def yesterday(settings: Settings) -> date:
    from pipelines.lib import clock

    return clock.yesterday(settings.tz)


def replace_settings(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)

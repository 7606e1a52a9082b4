"""Checks that span a whole file or reach into the database."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy.orm import Session

from shared.configfiles.files import ConfigFile
from shared.models import Base


def check_unique(file: ConfigFile, section: str, ids: Sequence[str]) -> None:
    """Reject a file that declares one id twice in a section."""
    seen: dict[str, int] = {}
    for index, item_id in enumerate(ids):
        if item_id in seen:
            raise file.error(
                [section, index, "id"],
                f"declared twice in this file (also {section}[{seen[item_id]}])",
            )
        seen[item_id] = index


def require(
    session: Session,
    file: ConfigFile,
    model: type[Base],
    item_id: str | None,
    where: Sequence[str | int],
    noun: str,
    declared: Collection[str] = (),
) -> None:
    """Reject a reference to something neither this file nor the database has."""
    if item_id is None or item_id in declared:
        return
    if session.get(model, item_id) is None:
        raise file.error(where, f"{noun} {item_id} does not exist")
